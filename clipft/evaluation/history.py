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
    """``[{"epoch": 0, "train/loss": ..., "val/acc": ...}, ...]`` sorted by epoch.

    A resumed run's earlier parts (``metrics.part1.csv``, ``part2`` ..., kept beside the current
    ``metrics.csv`` by the resume) are read first; an epoch that a later part logged again (the
    run was killed inside it and redid it) takes the later part's values.
    """
    if metrics_csv is None:
        return []
    metrics_csv = Path(metrics_csv)
    parts = sorted(metrics_csv.parent.glob("metrics.part*.csv"), key=_part_number) if metrics_csv.name == "metrics.csv" else []
    epochs: dict[int, dict[str, Any]] = {}
    for path in [*parts, metrics_csv]:
        if path.is_file():
            epochs.update(_read_one(path))
    return [epochs[e] for e in sorted(epochs)]


def _part_number(path: Path) -> int:
    digits = path.stem.removeprefix("metrics.part")
    return int(digits) if digits.isdigit() else 0


def _read_one(metrics_csv: Path) -> dict[int, dict[str, Any]]:
    epochs: dict[int, dict[str, Any]] = {}
    with open(metrics_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            record = epochs.setdefault(epoch, {"epoch": epoch})
            for key, value in row.items():
                if not value or not key or not key.startswith(EPOCH_PREFIXES) or key.endswith("_step"):
                    continue
                number = float(value)
                if math.isfinite(number):
                    record[key.removesuffix("_epoch")] = number
    return {e: r for e, r in epochs.items() if len(r) > 1}
