"""`python train.py` end to end in a fresh interpreter, as a new user runs it (small overrides)."""

from __future__ import annotations

import csv
import json

import yaml
from conftest import FAST, run_script


def test_train_script_writes_a_complete_run_directory(tmp_path):
    result = run_script("train.py", [*FAST, "trainer.max_epochs=3", "run_name=smoke"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "smoke").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 3
    assert (run / "checkpoints" / "best.ckpt").stat().st_size > 0
    assert (run / "checkpoints" / "last.ckpt").stat().st_size > 0
    metrics = json.loads((run / "metrics.json").read_text())
    summary = metrics["summary"]
    for key in ("test_accuracy", "test_macro_f1", "test_ece", "best_val_acc"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert len(summary["test_per_class_accuracy"]) == 10
    assert metrics["data"]["test"] == 40  # 10 classes x 4 generated test images
    assert metrics["run"]["versions"]["torch"]
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    assert any(r.get("val/acc") for r in rows) and any(r.get("train/loss_step") for r in rows)


def test_print_config_job_is_readable(tmp_path):
    result = run_script("train.py", ["--cfg", "job"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = yaml.safe_load(result.stdout)
    assert cfg["model"]["_target_"] == "clipft.methods.ContrastiveFineTune"
    assert cfg["data"]["_target_"] == "clipft.data.SyntheticSignsDataModule"
    assert not (tmp_path / "outputs").exists()  # printing a config runs nothing
