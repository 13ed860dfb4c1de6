"""Send a run's plots and per-class table to W&B, when a WandbLogger is attached.

The best checkpoint is uploaded as a W&B artifact by Lightning's own ``WandbLogger(log_model=...)``
(config: ``logger.wandb.log_model=true``); this module adds what Lightning does not log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PER_CLASS_COLUMNS = ["class", "accuracy", "precision", "recall", "f1", "support"]


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


def log_run_media(
    run: Any, plots: Mapping[str, str | Path], report: Mapping[str, Any] | None, summary: Mapping[str, Any],
    prefix: str = "eval",
) -> None:
    """Log to a ``wandb`` run object: every plot as an image, the per-class table, the summary numbers."""
    import wandb

    payload: dict[str, Any] = {f"{prefix}/{name}": wandb.Image(str(path)) for name, path in plots.items()}
    if report:
        payload[f"{prefix}/per_class"] = wandb.Table(columns=PER_CLASS_COLUMNS, data=per_class_rows(report))
    run.log(payload)
    run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})


def log_to_wandb_loggers(
    loggers: list[Any] | None, plots: Mapping[str, str | Path], report: Mapping[str, Any] | None,
    summary: Mapping[str, Any],
) -> bool:
    """Log through every attached WandbLogger; True if any did. W&B failures only warn (the run is done)."""
    done = False
    for lg in wandb_loggers(loggers):
        try:
            log_run_media(lg.experiment, plots, report, summary)
            done = True
        except Exception as exc:  # noqa: BLE001 - a W&B hiccup must not lose the run's local artefacts
            log.warning("could not log run media to W&B: %s", exc)
    return done
