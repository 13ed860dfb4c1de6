"""write_run_artefacts on a fixed prediction set: every file exists and parses; W&B offline media."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

from clipft.data.base import Sample
from clipft.evaluation.artefacts import write_run_artefacts
from clipft.evaluation.calibration import calibration_report
from clipft.evaluation.metrics import classification_report

PLOTS = ["confusion_matrix", "per_class_acc", "metrics_summary", "reliability", "class_similarity", "training_curves"]


class FakeCLIPRun:
    """Just what write_run_artefacts reads from a CLIP module: test outputs and class text features."""

    def __init__(self, probs, targets, text_features):
        self.test_outputs = {"probs": probs, "targets": targets}
        self._text = text_features

    def class_text_features(self):
        return self._text


def fixed_predictions(num_classes: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % num_classes
    logits = torch.randn(n, num_classes, generator=g)
    logits[torch.arange(n), targets] += 2.0
    return (logits * 2).softmax(-1), targets


def csv_logger_with_history(tmp_path: Path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    Path(logger.log_dir).mkdir(parents=True, exist_ok=True)
    (Path(logger.log_dir) / "metrics.csv").write_text(
        "epoch,step,train/loss_epoch,val/acc,val/loss\n0,5,2.0,,\n0,5,,0.4,1.5\n1,11,1.2,,\n1,11,,0.6,1.1\n"
    )
    return logger


def fake_clip_test_run(tmp_path: Path, names: list[str], n: int):
    """What write_run_artefacts is given after a CLIP test run: model, datamodule, trainer (+ the predictions)."""
    probs, targets = fixed_predictions(len(names), n)
    model = FakeCLIPRun(probs, targets, torch.nn.functional.normalize(torch.randn(len(names), 16), dim=-1))
    samples = [Sample(f"/data/test/{names[int(t)]}/{i:03d}.png", int(t)) for i, t in enumerate(targets)]
    datamodule = SimpleNamespace(class_names=names, test_samples=samples)
    trainer = SimpleNamespace(loggers=[csv_logger_with_history(tmp_path)])
    return probs, targets, samples, model, datamodule, trainer


def test_every_artefact_written_and_parses(tmp_path):
    names = [f"sign class {i}" for i in range(12)]
    probs, targets, samples, model, datamodule, trainer = fake_clip_test_run(tmp_path, names, 96)
    report = classification_report(probs, targets, names)
    calibration = calibration_report(probs, targets, probs, targets)
    metrics = {"summary": {"test_accuracy": report["accuracy"], "best_val_acc": 0.6}, "test": report}

    out = write_run_artefacts(tmp_path, model, datamodule, metrics, trainer, calibration)

    assert "artefacts_failed" not in out
    assert out["history"] == [
        {"epoch": 0, "train/loss": 2.0, "val/acc": 0.4, "val/loss": 1.5},
        {"epoch": 1, "train/loss": 1.2, "val/acc": 0.6, "val/loss": 1.1},
    ]
    assert out["calibration"]["temperature"] == calibration["temperature"]
    for name in PLOTS:
        path = tmp_path / out["artefacts"][name]
        assert path == tmp_path / "plots" / f"{name}.png"
        with Image.open(path) as im:
            im.verify()
    with open(tmp_path / "errors.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    wrong = int((probs.argmax(-1) != targets).sum())
    assert len(rows) == wrong > 0
    assert [float(r["prob_pred"]) for r in rows] == sorted((float(r["prob_pred"]) for r in rows), reverse=True)
    first = rows[0]
    i = next(k for k, s in enumerate(samples) if s.path == first["path"])
    assert first["true"] == names[int(targets[i])] and first["pred"] == names[int(probs[i].argmax())]
    json.dumps(out)  # still JSON-serialisable for metrics.json


def test_plots_false_writes_errors_and_history_but_no_figures(tmp_path):
    names = [f"c{i}" for i in range(4)]
    probs, targets, _, model, datamodule, trainer = fake_clip_test_run(tmp_path, names, 16)
    metrics = {"test": classification_report(probs, targets, names)}

    out = write_run_artefacts(tmp_path, model, datamodule, metrics, trainer, plots=False)

    assert out["artefacts"] == {"errors": "errors.csv"} and "artefacts_failed" not in out
    assert not (tmp_path / "plots").exists()
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    with open(tmp_path / "errors.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == int((probs.argmax(-1) != targets).sum())


def test_models_without_text_head_skip_similarity_and_missing_history(tmp_path):
    probs, targets = fixed_predictions(3, 9)
    model = SimpleNamespace(test_outputs={"probs": probs, "targets": targets})
    datamodule = SimpleNamespace(class_names=["a", "b", "c"], test_samples=[Sample(f"{i}.png", 0) for i in range(9)])
    out = write_run_artefacts(tmp_path, model, datamodule, {"test": classification_report(probs, targets, "abc")})
    assert "class_similarity" not in out["artefacts"] and "training_curves" not in out["artefacts"]
    assert out["history"] == []
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()


def test_58_class_confusion_matrix_is_large_enough_to_read(tmp_path):
    from clipft.evaluation.plots import plot_confusion_matrix

    names = [f"Speed limit ({i * 5} km/h) long name" for i in range(58)]
    probs, targets = fixed_predictions(58, 58 * 4)
    cm = classification_report(probs, targets, names)["confusion_matrix"]
    path = plot_confusion_matrix(cm, names, tmp_path / "cm.png")
    with Image.open(path) as im:
        assert min(im.size) > 58 * 20  # >= 20 px per class row/column (labels fit)


def test_wandb_offline_run_gets_plots_and_table(tmp_path, monkeypatch):
    import wandb

    from clipft.evaluation.plots import plot_metrics_summary
    from clipft.evaluation.wandb_media import log_run_media

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    probs, targets = fixed_predictions(3, 9)
    report = classification_report(probs, targets, ["a", "b", "c"])
    plot = plot_metrics_summary({"accuracy": report["accuracy"]}, tmp_path / "summary.png")
    run = wandb.init(project="clipft-test", dir=str(tmp_path), mode="offline")
    try:
        log_run_media(run, {"metrics_summary": plot}, report, {"test_accuracy": report["accuracy"], "note": "x"})
        assert run.summary["test_accuracy"] == report["accuracy"]
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    media = list((run_dir / "files" / "media").rglob("*"))
    assert any(p.suffix == ".png" and "metrics_summary" in p.name for p in media)
    table = next(p for p in media if p.name.endswith(".table.json") and "per_class" in p.name)
    data = json.loads(table.read_text())
    assert data["columns"][:2] == ["class", "accuracy"] and [row[0] for row in data["data"]] == ["a", "b", "c"]
    assert list(run_dir.glob("*.wandb"))


def test_run_artefacts_reach_an_attached_wandb_logger(tmp_path, monkeypatch):
    """The train/eval path: write_run_artefacts finds the WandbLogger among the trainer's loggers."""
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    probs, targets = fixed_predictions(3, 9)
    model = SimpleNamespace(test_outputs={"probs": probs, "targets": targets})
    datamodule = SimpleNamespace(class_names=["a", "b", "c"], test_samples=[Sample(f"{i}.png", 0) for i in range(9)])
    logger = WandbLogger(project="clipft-test", save_dir=str(tmp_path), offline=True)
    try:
        report = classification_report(probs, targets, ["a", "b", "c"])
        write_run_artefacts(tmp_path, model, datamodule, {"test": report, "summary": {"test_accuracy": 0.5}},
                            SimpleNamespace(loggers=[logger]))
        assert logger.experiment.summary["test_accuracy"] == 0.5
        run_dir = Path(logger.experiment.dir).parent
    finally:
        logger.experiment.finish()
    logged = {p.name.split("_")[0] for p in (run_dir / "files" / "media" / "images" / "eval").glob("*.png")}
    assert {"confusion", "reliability", "metrics", "per"} <= logged
    assert list((run_dir / "files" / "media" / "table" / "eval").glob("per_class*.table.json"))
