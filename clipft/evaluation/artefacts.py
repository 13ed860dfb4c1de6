"""Everything a run leaves for a researcher to look at, written by one call at the end of train/eval.

``write_run_artefacts`` adds the per-epoch history (and calibration, when given) to the metrics
dict, writes ``plots/*.png`` and ``errors.csv`` into the run directory, and mirrors the plots and
a per-class table to W&B when a WandbLogger is attached. A failing figure is logged and listed
under ``artefacts_failed``; it never costs the run its ``metrics.json``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from clipft.evaluation.calibration import apply_temperature
from clipft.evaluation.history import csv_metrics_file, read_epoch_history
from clipft.evaluation.metrics import most_confident_errors
from clipft.utils.io import atomic_write_text

log = logging.getLogger(__name__)

ERRORS_COLUMNS = ["path", "true", "pred", "prob_pred", "prob_true"]


def errors_table(paths: Sequence[str], probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> str:
    """CSV of the misclassified samples, most confident errors first."""
    pred = probs.argmax(dim=-1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ERRORS_COLUMNS)
    for i in most_confident_errors(probs, targets):
        t, p = int(targets[i]), int(pred[i])
        prob_pred, prob_true = f"{float(probs[i, p]):.6f}", f"{float(probs[i, t]):.6f}"
        writer.writerow([paths[i], class_names[t], class_names[p], prob_pred, prob_true])
    return buf.getvalue()


def summary_values(metrics: dict[str, Any], split: str = "test") -> dict[str, float]:
    """The headline numbers drawn in ``metrics_summary.png`` (the scalar headline metrics, top-k, calibration)."""
    from clipft.evaluation.headline import HEADLINE_METRICS

    report = metrics.get(split) or {}
    values: dict[str, Any] = {}
    for metric in HEADLINE_METRICS:
        if metric.table and report:
            values[metric.name] = metric.compute(report)
    values.update({k: report[k] for k in report if k.startswith("top") and k.endswith("_accuracy")})
    calibration = metrics.get("calibration") or {}
    if split in calibration:
        values["ece (temperature-scaled)"] = calibration[split]["ece_after"]
    best = (metrics.get("summary") or {}).get("best_val_acc")
    if isinstance(best, (int, float)):
        values["best val accuracy"] = float(best)
    return {k: float(v) for k, v in values.items()}


def class_text_similarity(model: Any) -> torch.Tensor | None:
    """Cosine similarity of a CLIP module's class text embeddings (None for models without a text head)."""
    if not callable(getattr(model, "class_text_features", None)):
        return None
    with torch.no_grad():  # learned prompts (CoOp) carry gradients
        feats = torch.nn.functional.normalize(model.class_text_features().detach().float().cpu(), dim=-1)
    return feats @ feats.t()


def write_run_artefacts(
    output_dir: str | Path,
    model: Any,
    datamodule: Any,
    metrics: dict[str, Any],
    trainer: Any = None,
    calibration: dict[str, Any] | None = None,
    gradcam_n: int = 0,
    plots: bool = True,
    split: str = "test",
) -> dict[str, Any]:
    """Write plots + ``errors.csv`` under ``output_dir``; return ``metrics`` with history/artefact entries added.

    ``split``: which split ``model.test_outputs`` and ``metrics[split]`` hold (``test``, or ``val`` for
    ``eval.py split=val``); the errors table and Grad-CAM grid name that split's files.

    ``calibration`` is :func:`clipft.evaluation.calibration.calibration_report` (adds the scaled curve to
    ``reliability.png``); ``gradcam_n > 0`` also writes ``plots/gradcam_grid.png``. ``plots=False``
    skips the summary figures (1-5 s a run, e.g. in sweeps); an asked-for Grad-CAM grid is still drawn.
    """
    from clipft.evaluation.wandb_media import log_to_wandb_loggers

    output_dir = Path(output_dir)
    loggers = list(getattr(trainer, "loggers", None) or [])
    history = read_epoch_history(csv_metrics_file(loggers))
    metrics["history"] = history
    if not getattr(trainer, "is_global_zero", True):  # multi-GPU: one process writes the files
        return metrics
    if calibration:
        metrics["calibration"] = calibration
    files = _Artefacts(output_dir, plots)
    report = metrics.get(split)
    _report_figures(files, metrics, report, list(datamodule.class_names), split, history, model)
    predictions = _prediction_artefacts(files, model, datamodule, report, calibration, gradcam_n, split)
    add_lr_finder_record(metrics, trainer, output_dir, files.written)
    metrics["artefacts"] = {name: str(path.relative_to(output_dir)) for name, path in files.written.items()}
    if files.failed:
        metrics["artefacts_failed"] = files.failed
    figures = {k: v for k, v in files.written.items() if v.suffix == ".png"}
    log_to_wandb_loggers(loggers, figures, report, metrics.get("summary") or {}, predictions)
    return metrics


class _Artefacts:
    """The files a run's report writes: each attempt recorded as written or failed, never raised."""

    def __init__(self, output_dir: Path, plots: bool) -> None:
        self.output_dir, self.plot_dir, self.plots = output_dir, output_dir / "plots", plots
        self.written: dict[str, Path] = {}
        self.failed: dict[str, str] = {}

    def attempt(self, name: str, make: Callable[..., Path | None], *args: Any, path: Path | None = None) -> None:
        """``make(*args, path)`` with path ``plots/<name>.png`` unless given (skipped with plots=false)."""
        if path is None and not self.plots:
            return
        try:
            written_path = make(*args, path or self.plot_dir / f"{name}.png")
        except Exception as exc:  # noqa: BLE001 - a figure bug must not lose the run's metrics
            log.warning("could not write %s: %s: %s", name, type(exc).__name__, exc)
            self.failed[name] = f"{type(exc).__name__}: {exc}"
            return
        if written_path is not None:
            self.written[name] = Path(written_path)


def _report_figures(files: _Artefacts, metrics: dict[str, Any], report: dict[str, Any] | None, class_names: list[str],
                    split: str, history: Any, model: Any) -> None:
    """Confusion matrix, per-class accuracy, metrics summary, class-prompt similarity, training curves."""
    from clipft.evaluation import plots as plotting

    if report:
        files.attempt("confusion_matrix", lambda path: plotting.plot_confusion_matrix(
            report["confusion_matrix"], class_names, path, split=split))
        files.attempt("per_class_acc", plotting.plot_per_class_accuracy, report["per_class"])
        files.attempt("metrics_summary", lambda path: plotting.plot_metrics_summary(
            summary_values(metrics, split), path, title=f"{split.capitalize()} metrics"))
    similarity = None
    try:
        if files.plots:  # only the figure uses it, and it encodes every class prompt
            similarity = class_text_similarity(model)
    except Exception as exc:  # noqa: BLE001
        files.failed["class_similarity"] = f"{type(exc).__name__}: {exc}"
    if similarity is not None:
        files.attempt("class_similarity", plotting.plot_class_similarity, similarity.numpy(), class_names)
    if history:
        files.attempt("training_curves", plotting.plot_training_curves, history)


def _prediction_artefacts(files: _Artefacts, model: Any, datamodule: Any, report: dict[str, Any] | None,
                          calibration: dict[str, Any] | None, gradcam_n: int, split: str) -> Any:
    """Reliability diagram, ``errors.csv`` and the Grad-CAM grid from the split's predictions; the W&B table rows."""
    from clipft.evaluation import plots as plotting
    from clipft.evaluation.wandb_media import Predictions

    outputs = getattr(model, "test_outputs", None) or {}
    if "probs" not in outputs:
        return None
    class_names = list(datamodule.class_names)
    probs, targets = outputs["probs"].float(), outputs["targets"].long()
    files.attempt("reliability", plotting.plot_reliability, _reliability_curves(probs, targets, report, calibration))
    samples = list(getattr(datamodule, f"{split}_samples", []) or [])
    paths = [s.path for s in samples]
    if len(samples) != len(targets):
        files.failed["errors"] = f"{len(samples)} {split} samples but {len(targets)} predictions: cannot name the files"
        return None
    table = errors_table(paths, probs, targets, class_names)
    files.attempt("errors", lambda path: atomic_write_text(path, table), path=files.output_dir / "errors.csv")
    if gradcam_n > 0:
        from clipft.evaluation.gradcam import save_gradcam_grid

        files.attempt("gradcam_grid", lambda path: save_gradcam_grid(
            model, paths, probs, targets, class_names, path, gradcam_n), path=files.plot_dir / "gradcam_grid.png")
    return Predictions(probs, targets, class_names, paths)


def add_lr_finder_record(metrics: dict[str, Any], trainer: Any, output_dir: Path, written: dict[str, Path]) -> None:
    """The learning-rate search of ``callbacks=[default,lr_finder]`` (``clipft.callbacks.lr_finder``):
    ``metrics["lr_finder"]`` (chosen and configured rate, steps; the curve stays in ``lr_finder.json``),
    ``summary.lr_finder_lr``, and its plot among the run's figures. ``config`` keeps the configured rate."""
    for callback in getattr(trainer, "callbacks", None) or []:
        record = getattr(callback, "record", None)
        if type(callback).__name__ != "LearningRateFinder" or not isinstance(record, dict):
            continue
        metrics["lr_finder"] = {k: v for k, v in record.items() if k != "curve"}
        metrics.setdefault("summary", {})["lr_finder_lr"] = record.get("lr")
        plot = output_dir / str(record.get("plot") or "")
        if record.get("plot") and plot.is_file():
            written["lr_finder"] = plot
        return


def _reliability_curves(probs, targets, report, calibration):
    from clipft.evaluation.metrics import expected_calibration_error

    ece = report["ece"] if report else expected_calibration_error(probs, targets)
    curves = {"model": (probs.numpy(), targets.numpy(), ece)}
    if calibration and "temperature" in calibration:
        scaled = apply_temperature(probs, calibration["temperature"])
        label = f"temperature-scaled (T={calibration['temperature']:.2f})"
        curves[label] = (scaled.numpy(), targets.numpy(), expected_calibration_error(scaled, targets))
    return curves
