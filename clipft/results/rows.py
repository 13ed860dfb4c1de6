"""One row per run: what it ran (method, model, data, split), its sizes and its headline numbers.

Everything here is read from the run's files as the pipeline writes them; nothing is dataset-specific.
The split column reads the data config and the data report (``metrics.json["data"]``, written by
:class:`clipft.data.base.ImageClassificationDataModule`: its ``duplicates.mode`` is the dedupe policy).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clipft.evaluation.headline import table_values
from clipft.results.columns import EXTRA_COLUMNS, SWEPT_COLUMN, all_columns
from clipft.results.discover import find_run_dirs
from clipft.results.overrides import varying_overrides, without_bookkeeping
from clipft.results.records import (
    METRICS_FILE,
    failure_record,
    hydra_choices,
    hydra_overrides,
    is_run_dir,
    read_json,
    run_config,
)

DEDUPE_NAMES = {"none": "random", "group": "dup-grouped", "drop": "deduped"}
# a data config's ``group_<units>: true`` switch keeps such units in one split (e.g. ``group_tracks``)
GROUP_SWITCH_PREFIX = "group_"


def dedupe_mode(data_cfg: dict[str, Any], split_report: dict[str, Any]) -> Any:
    """The duplicate policy: ``data.dedupe`` of the config, else the data report's ``duplicates.mode``."""
    mode = data_cfg.get("dedupe")
    if mode is None:
        duplicates = split_report.get("duplicates")
        mode = duplicates.get("mode") if isinstance(duplicates, dict) else None
    return mode


def grouped_units(data_cfg: dict[str, Any]) -> list[str]:
    """The units a dataset keeps together in one split, from its ``group_<units>: true`` switches."""
    return [
        key[len(GROUP_SWITCH_PREFIX) :].removesuffix("s")
        for key, value in data_cfg.items()
        if isinstance(key, str) and key.startswith(GROUP_SWITCH_PREFIX) and value is True
    ]


def _grouped(kind: str, units: Sequence[str]) -> str:
    if not units:
        return kind
    label = "+".join(units)
    if kind == "dup-grouped":
        return f"{label}+dup-grouped"
    return f"{label}-grouped" if kind == "random" else f"{kind}, {label}-grouped"


def describe_split(data_cfg: dict[str, Any], split_report: dict[str, Any]) -> str:
    """``random 90/10``, ``dup-grouped 90/10`` ...: how train/val were drawn (and how the test was chosen)."""
    dedupe = dedupe_mode(data_cfg, split_report)
    kind = _grouped(DEDUPE_NAMES.get(str(dedupe), "random") if dedupe is not None else "random", grouped_units(data_cfg))
    val = data_cfg.get("val_fraction")
    text = kind if val is None else f"{kind} {round(100 * (1 - float(val)))}/{round(100 * float(val))}"
    test_view = data_cfg.get("test_view")
    if test_view:
        text += f", test {test_view}"
    if data_cfg.get("shots"):  # the k-shot protocol: its own row per K
        text += f", {int(data_cfg['shots'])}-shot"
    return text


def is_debug_run(config: dict[str, Any], choices: dict[str, Any]) -> bool:
    """A ``debug=...`` or ``trainer.fast_dev_run`` run: its numbers come from a batch or an epoch, not a result."""
    trainer = config.get("trainer") or {}
    return bool(trainer.get("fast_dev_run")) or choices.get("debug") not in (None, "null", "")


def input_size(config: dict[str, Any]) -> int | None:
    """The side the images were resized to: ``data.image_size``, else ``model.image_size`` (CNNs), else
    ``model.clip.image_size`` (dual encoders); None when the model's own processor decides (CLIP checkpoints)."""
    model = config.get("model") or {}
    clip = model.get("clip") if isinstance(model.get("clip"), dict) else {}
    size = (config.get("data") or {}).get("image_size") or model.get("image_size") or clip.get("image_size")
    return int(size) if isinstance(size, (int, float)) and not isinstance(size, bool) else None


def _data_name(data_cfg: dict[str, Any]) -> str | None:
    root = data_cfg.get("root")
    return Path(str(root)).name if root else None


def _method_of_checkpoint(ckpt: str) -> str | None:
    run_dir = Path(ckpt).parent.parent  # <run>/checkpoints/best.ckpt
    if not is_run_dir(run_dir):
        return None
    choices = hydra_choices(run_dir)
    return choices.get("experiment") or choices.get("model")


def _method(metrics: dict[str, Any], config: dict[str, Any], choices: dict[str, Any]) -> Any:
    method = choices.get("experiment") or config.get("run_name") or choices.get("model")
    if "checkpoint" in metrics:  # an eval.py run: name it after the run that trained the checkpoint
        ckpt = metrics["checkpoint"]  # null for zero-shot evaluation
        method = f"eval: {(_method_of_checkpoint(ckpt) or Path(ckpt).name) if ckpt else method}"
    return method


def _what_ran(metrics: dict[str, Any], config: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    data_cfg = config.get("data") or {}
    split_report = metrics.get("data") or {}
    return {
        "method": _method(metrics, config, choices),
        "model": choices.get("model"),
        "data": choices.get("data") or _data_name(data_cfg),
        "split": describe_split(data_cfg, split_report),
        "image_size": input_size(config),
        "n_train": split_report.get("train"),
        "n_val": split_report.get("val"),
        "n_test": split_report.get("test"),
    }


def _numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    summary = metrics.get("summary") or {}
    return {
        "epochs": metrics.get("epochs_trained"),
        # a training run's best val epoch, or an eval run on split=val (eval.py writes val_accuracy)
        "val_acc": summary.get("best_val_acc", summary.get("val_accuracy")),
        **table_values(summary, "test"),
        "time_s": metrics.get("duration_s"),
    }


def _status(run_dir: Path, metrics: dict[str, Any], config: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    if metrics:
        return {"status": "debug" if is_debug_run(config, choices) else "ok", "error": None}
    failure = failure_record(run_dir)
    if failure is None:
        return {"status": "incomplete", "error": None}
    return {"status": "failed", "error": str(failure.get("error") or "unknown error")}


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One table row for a run directory (status ``ok``, ``debug``, ``failed`` or ``incomplete``)."""
    run_dir = Path(run_dir)
    choices = hydra_choices(run_dir)
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    config = run_config(run_dir, metrics)
    data_cfg = config.get("data") or {}
    return {
        **_what_ran(metrics, config, choices),
        **_numbers(metrics),
        **_status(run_dir, metrics, config, choices),
        "seed": config.get("seed"),
        "draw": data_cfg.get("shot_seed") if data_cfg.get("shots") else None,  # which k-shot subset
        "overrides": " ".join(hydra_overrides(run_dir)),
        "run_dir": str(run_dir),
        "summary": metrics.get("summary") or {},
    }


def rows_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows (:func:`run_row`) as one frame, with the ``swept`` column: what tells the listed runs apart."""
    frame = pd.DataFrame(list(rows), columns=[*all_columns(), *EXTRA_COLUMNS])
    frame[SWEPT_COLUMN] = varying_overrides([without_bookkeeping(o) for o in frame["overrides"]]) if len(frame) > 1 else ""
    return frame


def collect(paths: Iterable[str | Path], complete_only: bool = False) -> pd.DataFrame:
    """One row per run found under ``paths`` (see :func:`all_columns`), in path order."""
    frame = rows_table([run_row(d) for d in find_run_dirs(paths)])
    if complete_only:
        frame = frame[frame["status"] == "ok"].reset_index(drop=True)
    return frame
