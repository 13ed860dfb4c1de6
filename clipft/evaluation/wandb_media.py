"""Send a run's plots, tables and report files to W&B, when a WandbLogger is attached.

The best checkpoint is uploaded as a W&B artifact by the logger itself (``logger.wandb.log_model=true``,
:class:`clipft.loggers.WandbLogger`); this module adds what Lightning does not log: every plot, the
per-class table, an interactive confusion matrix (``wandb.plot``), a table of the misclassified
images with thumbnails, ``metrics.json`` / ``data_report.json`` as an artifact, and the run's
record (git commit, dirty flag, parameter counts) in its config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipft.evaluation.metrics import most_confident_errors

log = logging.getLogger(__name__)

PER_CLASS_COLUMNS = ["class", "accuracy", "precision", "recall", "f1", "support"]
MISCLASSIFIED_COLUMNS = ["image", "path", "true", "predicted", "confidence", "true_class_prob"]
MAX_MISCLASSIFIED = 100  # the most confident mistakes first; a table of thousands helps nobody
THUMBNAIL_PX = 96
REPORT_FILES = ("metrics.json", "data_report.json")


@dataclass
class Predictions:
    """One split's predictions, in the order of ``paths``."""

    probs: Any  # N x C tensor
    targets: Any  # N tensor
    class_names: Sequence[str]
    paths: Sequence[str | Path]


def wandb_loggers(loggers: list[Any] | None) -> list[Any]:
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover
        return []
    return [lg for lg in loggers or [] if isinstance(lg, WandbLogger)]


def per_class_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    return [
        [name, v["accuracy"], v["precision"], v.get("recall", v["accuracy"]), v.get("f1"), v["support"]]
        for name, v in report.get("per_class", {}).items()
    ]


def misclassified_rows(predictions: Predictions, limit: int = MAX_MISCLASSIFIED) -> list[dict[str, Any]]:
    """The wrong predictions, most confident first: path, true and predicted class, their probabilities."""
    probs, targets = predictions.probs.float(), predictions.targets.long()
    confidence, predicted = probs.max(dim=-1)
    wrong = most_confident_errors(probs, targets)
    names = list(predictions.class_names)
    return [
        {"path": str(predictions.paths[i]), "true": names[int(targets[i])], "predicted": names[int(predicted[i])],
         "confidence": round(float(confidence[i]), 4), "true_class_prob": round(float(probs[i, int(targets[i])]), 4)}
        for i in wrong[:limit]
    ]


def _thumbnail(path: str) -> Any:
    import wandb
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        return wandb.Image(image)


def log_run_media(
    run: Any, plots: Mapping[str, str | Path], report: Mapping[str, Any] | None, summary: Mapping[str, Any],
    prefix: str = "eval", predictions: Predictions | None = None,
) -> None:
    """Log to a ``wandb`` run object: every plot as an image, the per-class table, the summary numbers and,
    given the predictions, the interactive confusion matrix and the misclassified-images table."""
    import wandb

    payload: dict[str, Any] = {f"{prefix}/{name}": wandb.Image(str(path)) for name, path in plots.items()}
    if report:
        payload[f"{prefix}/per_class"] = wandb.Table(columns=PER_CLASS_COLUMNS, data=per_class_rows(report))
    if predictions is not None and len(predictions.targets):
        payload[f"{prefix}/confusion_matrix_interactive"] = wandb.plot.confusion_matrix(
            y_true=predictions.targets.long().tolist(), preds=predictions.probs.argmax(dim=-1).tolist(),
            class_names=list(predictions.class_names), title=f"{prefix} confusion matrix",
        )
        rows = misclassified_rows(predictions)
        payload[f"{prefix}/misclassified"] = wandb.Table(
            columns=MISCLASSIFIED_COLUMNS, data=[[_thumbnail(r["path"]), *(r[c] for c in MISCLASSIFIED_COLUMNS[1:])] for r in rows]
        )
    run.log(payload)
    run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})


def log_to_wandb_loggers(
    loggers: list[Any] | None, plots: Mapping[str, str | Path], report: Mapping[str, Any] | None,
    summary: Mapping[str, Any], predictions: Predictions | None = None,
) -> bool:
    """Log through every attached WandbLogger; True if any did. W&B failures only warn (the run is done)."""
    return _each_run(loggers, "run media", lambda run: log_run_media(run, plots, report, summary, predictions=predictions))


def log_run_files(loggers: list[Any] | None, output_dir: str | Path, names: Sequence[str] = REPORT_FILES) -> bool:
    """``metrics.json`` and ``data_report.json`` (those that exist) as one ``run-report`` artifact of the run."""
    files = [Path(output_dir) / name for name in names if (Path(output_dir) / name).is_file()]
    if not files:
        return False

    def upload(run: Any) -> None:
        import wandb

        artifact = wandb.Artifact(name=f"run-{run.id}-report", type="run-report")
        for file in files:
            artifact.add_file(str(file), name=file.name)
        run.log_artifact(artifact)

    return _each_run(loggers, "metrics.json / data_report.json", upload)


def log_run_record(loggers: list[Any] | None, record: Mapping[str, Any]) -> bool:
    """Where the run came from (git commit, dirty flag, parameter counts) into each W&B run's config."""
    return _each_run(loggers, "the run record", lambda run: run.config.update({"run": dict(record)}, allow_val_change=True))


def _each_run(loggers: list[Any] | None, what: str, action: Any) -> bool:
    done = False
    for lg in wandb_loggers(loggers):
        try:
            action(lg.experiment)
            done = True
        except Exception as exc:  # noqa: BLE001 - a W&B hiccup must not lose the run's local artefacts
            log.warning("could not log %s to W&B: %s", what, exc)
    return done
