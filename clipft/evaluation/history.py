"""Per-epoch training history, read back from the CSV logger's ``metrics.csv``.

The CSV logger writes one sparse row per logging call; this folds them into one record per
epoch holding the epoch-level train/val values (step-level ``*_step`` columns and the final
test row are left out).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

EPOCH_PREFIXES = ("train/", "val/")


def csv_metrics_file(loggers: list[Any]) -> Path | None:
    """``metrics.csv`` of the first Lightning CSVLogger among ``loggers``, if it exists."""
    from lightning.pytorch.loggers import CSVLogger

    for lg in loggers or []:
        if isinstance(lg, CSVLogger):
            path = Path(lg.log_dir) / "metrics.csv"
            if path.is_file():
                return path
    return None


def read_epoch_history(metrics_csv: str | Path | None) -> list[dict[str, Any]]:
    """``[{"epoch": 0, "train/loss": ..., "val/acc": ...}, ...]`` sorted by epoch."""
    if metrics_csv is None or not Path(metrics_csv).is_file():
        return []
    epochs: dict[int, dict[str, Any]] = {}
    with open(metrics_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            record = epochs.setdefault(epoch, {"epoch": epoch})
            for key, value in row.items():
                if not value or not key.startswith(EPOCH_PREFIXES) or key.endswith("_step"):
                    continue
                number = float(value)
                if math.isfinite(number):
                    record[key.removesuffix("_epoch")] = number
    return [epochs[e] for e in sorted(epochs) if len(epochs[e]) > 1]
