"""W&B as its users expect, checked in the offline run files (no account, no network): run names
from the overrides, ``:best`` only on the best checkpoint, the interactive confusion matrix, the
misclassified-images table, metrics.json / data_report.json as an artifact, parameter counts and
the git commit + dirty flag in the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, run_script
from wandb_records import complete_records, config, history_keys, of_kind

from clipft.loggers import run_label

pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("wandb-run")
    result = run_script("train.py", [
        *FAST, "data.train_per_class=8", "data.test_per_class=4", "logger=wandb", "logger.wandb.log_model=true",
        "callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min",
        "~callbacks.early_stopping", "trainer.max_epochs=3", "model.optimizer.lr=0.003", "seed=1",
        f"hydra.run.dir={root / 'run'}",
    ], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "run"
    (wandb_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return {"run_dir": run_dir, "records": complete_records(wandb_file), "files": wandb_file.parent / "files",
            "metrics": json.loads((run_dir / "metrics.json").read_text())}


def test_the_run_is_named_by_its_overrides(wandb_run):
    (run,) = of_kind(wandb_run["records"], "run")
    name, overrides = run.display_name.split(":", 1)
    assert name == wandb_run["metrics"]["config"]["run_name"]
    assert {"model.optimizer.lr=0.003", "seed=1", "trainer.max_epochs=3"} <= set(overrides.split(","))
    assert "hydra.run.dir" not in overrides and "logger=" not in overrides and "enable_model_summary" not in overrides
    assert run_label("exp", "") == "exp" and len(run_label("exp", "x=1," * 200)) == 512


def test_only_the_monitored_best_checkpoint_carries_best(wandb_run):
    models = [a for a in of_kind(wandb_run["records"], "artifact") if a.type == "model"]
    tagged = {}
    for artifact in models:
        meta = json.loads(artifact.metadata)
        tagged.setdefault(meta["original_filename"], set()).update(artifact.aliases)
    best_name = Path(wandb_run["metrics"]["best_checkpoint"]).name
    assert "last.ckpt" in tagged and "best" not in tagged["last.ckpt"]
    assert [name for name, aliases in tagged.items() if "best" in aliases] == [best_name]


def test_confusion_matrix_misclassified_table_and_report_artifact(wandb_run):
    recs = wandb_run["records"]
    keys = history_keys(recs)
    assert any(k.startswith("eval/confusion_matrix_interactive") for k in keys)
    assert any(k.startswith("eval/misclassified") for k in keys) and any(k.startswith("eval/per_class") for k in keys)
    cfg = config(recs)
    assert cfg["_wandb"]["visualize"]["eval/confusion_matrix_interactive"]["panel_config"]["panelDefId"] == "wandb/confusion_matrix/v1"
    (table,) = (wandb_run["files"] / "media" / "table" / "eval").glob("misclassified*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == ["image", "path", "true", "predicted", "confidence", "true_class_prob"]
    test = wandb_run["metrics"]["test"]
    errors = test["num_samples"] - round(test["accuracy"] * test["num_samples"])
    rows = data["data"]
    assert 0 < len(rows) == min(errors, 100)
    assert all(row[2] != row[3] for row in rows) and rows == sorted(rows, key=lambda r: -r[4])
    (table_artifact,) = [a for a in of_kind(recs, "artifact") if a.type == "run_table" and "misclassified" in a.name]
    thumbnails = [c.path for c in table_artifact.manifest.contents if c.path.startswith("media/images/")]
    assert len(thumbnails) == len(rows)  # one image per misclassified row, uploaded with the table
    reports = [a for a in of_kind(recs, "artifact") if a.type == "run-report"]
    assert len(reports) == 1
    assert {entry.path for entry in reports[0].manifest.contents} == {"metrics.json", "data_report.json"}


def test_config_holds_git_commit_dirty_flag_and_parameter_counts(wandb_run):
    run = config(wandb_run["records"])["run"]
    assert run["parameters"]["total"] >= run["parameters"]["trainable"] > 0
    assert run["parameters"] == wandb_run["metrics"]["run"]["parameters"]
    assert set(run) >= {"git_commit", "git_dirty"} and run["git_commit"] == wandb_run["metrics"]["run"]["git_commit"]
