"""A real (tiny) training run and eval.py on its checkpoint leave every promised artefact."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import run_script
from eval_helpers import colour_data_overrides
from PIL import Image

RUN_PLOTS = ["confusion_matrix", "reliability", "metrics_summary", "per_class_acc", "class_similarity", "training_curves"]


def test_training_run_writes_metrics_history_plots_and_errors(colour_run):
    run_dir, metrics = colour_run["run_dir"], colour_run["metrics"]
    summary = metrics["summary"]
    for key in ("test_accuracy", "test_macro_f1", "test_ece"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["test_accuracy"] == pytest.approx(1.0)  # red/green/blue squares are easy
    assert set(metrics["test"]["per_class"]) == {"blue", "green", "red"}
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert metrics["history"][-1]["train/loss"] < metrics["history"][0]["train/loss"]
    assert "artefacts_failed" not in metrics
    for name in RUN_PLOTS:
        assert metrics["artefacts"][name] == f"plots/{name}.png"
        with Image.open(run_dir / "plots" / f"{name}.png") as im:
            im.verify()
    with open(run_dir / "errors.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["path", "true", "pred", "prob_pred", "prob_true"]
        assert list(reader) == []  # nothing misclassified


@pytest.mark.slow  # a fresh interpreter (~10 s idle, ~30 s on the shared 2 cores)
def test_eval_calibrates_and_writes_gradcam_grid(colour_run, tmp_path):
    out = tmp_path / "eval"
    result = run_script(
        "eval.py",
        [f"ckpt_path={colour_run['ckpt']}", *colour_data_overrides(colour_run["data"]), "calibrate=true",
         "gradcam.n=4", f"hydra.run.dir={out}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # same checkpoint, same test split: eval.py reproduces the training run's test numbers
    assert metrics["summary"]["test_accuracy"] == pytest.approx(colour_run["metrics"]["summary"]["test_accuracy"])
    assert metrics["summary"]["test_ece"] == pytest.approx(colour_run["metrics"]["summary"]["test_ece"], abs=1e-5)
    cal = metrics["calibration"]
    assert cal["temperature"] > 0 and metrics["summary"]["temperature"] == cal["temperature"]
    assert cal["val"]["nll_after"] <= cal["val"]["nll_before"] + 1e-6
    assert metrics["summary"]["test_ece_calibrated"] == cal["test"]["ece_after"]
    for name in ("gradcam_grid", "reliability", "confusion_matrix", "class_similarity"):
        with Image.open(out / "plots" / f"{name}.png") as im:
            im.verify()
