"""The notebooks run top to bottom (nbclient), so they cannot rot silently."""

from __future__ import annotations

import json
import os

import nbformat
import pytest
import yaml
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, env: dict[str, str], timeout: int = 300) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", ""))
            chunks.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(chunks)


def test_analysis_notebook_compares_a_sweep(tmp_path):
    sweep = tmp_path / "multirun" / "2026-03-03_12-00-00"
    for num, (lr, val) in enumerate([(1e-5, 0.7), (1e-6, 0.9), (1e-7, None)]):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.optimizer.lr={lr}", "trainer.max_epochs=3"]))
        if val is not None:
            summary = {"best_val_acc": val, "test_accuracy": val - 0.05, "test_per_class_accuracy": {"stop": val, "yield": 1.0}}
            (job / "metrics.json").write_text(json.dumps({"summary": summary, "epochs_trained": 3, "duration_s": 10}))
    nb = execute("analysis.ipynb", {"CLIPFT_SWEEP_DIR": str(sweep)})
    text = outputs_text(nb)
    ranked = text.index("model.optimizer.lr=1e-06")
    assert ranked < text.index("model.optimizer.lr=1e-05")  # best first
    assert "incomplete" in text and "WANDB_PROJECT not set" in text
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_quickstart_notebook_trains_evaluates_and_tabulates(tmp_path):
    nb = execute("quickstart.ipynb", {"CLIPFT_QUICKSTART_FAST": "1", "CLIPFT_ROOT": str(tmp_path)}, timeout=600)
    assert list((tmp_path / "outputs" / "demo").glob("*/checkpoints/best.ckpt"))
    assert list((tmp_path / "outputs" / "eval-synthetic_signs").glob("*/metrics.json"))
    text = outputs_text(nb)
    assert "| demo" in text and "eval: demo" in text  # the results table, train and eval rows
    assert "\x1b[" not in text, "terminal colour/progress codes leaked into the notebook's outputs"
