"""The results table: every finished run's ``metrics.json`` collected into one comparable row.

``python -m clipft.results multirun/2026-... outputs/... [--out docs/table.md] [--csv t.csv]``
walks the given folders (or ``metrics.json`` files), reads each run's metrics and its Hydra
record (``.hydra/hydra.yaml``: which experiment, model and data it composed), and prints one
markdown table: method, data, split, epochs, val/test accuracy, macro-F1, ECE, time.
Runs that started but left no ``metrics.json`` (crashed, killed, still running) are listed
with their status instead of being silently dropped; ``debug=...`` / ``fast_dev_run`` runs are listed
with status ``debug`` (their numbers come from one batch or epoch). When the listed runs differ in
their overrides (a sweep), the ``swept`` column shows only what differs (all of them: ``--columns ...,overrides``). Imports no Hydra: it reads files only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from clipft.errors import ConfigError, DataError
from clipft.evaluation.headline import percent_columns, table_columns, table_values
from clipft.utils.io import atomic_write_text

METRICS_FILE = "metrics.json"
HYDRA_DIR = ".hydra"
# how a Hydra job ended, written by clipft.pipeline.hydra_callbacks.JobStatusRecorder
JOB_STATUS_FILE = "job_status.json"

# column -> header shown in the markdown table (the headline metrics' columns are added by columns())
BASE_COLUMNS: dict[str, str] = {
    "method": "method",
    "model": "model",
    "data": "data",
    "split": "split",
    "image_size": "px",
    "n_train": "train",
    "n_val": "val",
    "n_test": "test",
    "epochs": "epochs",
    "val_acc": "val acc",
}
TAIL_COLUMNS: dict[str, str] = {"time_s": "time", "status": "status"}


def all_columns() -> dict[str, str]:
    """Every table column -> its header: run facts, then the headline metrics (clipft.evaluation.headline)."""
    return {**BASE_COLUMNS, **table_columns("test"), **TAIL_COLUMNS}


def percent_column_names() -> tuple[str, ...]:
    return ("val_acc", *percent_columns("test"))

INTEGER_COLUMNS = ("rank", "image_size", "n_train", "n_val", "n_test", "epochs")
TEXT_HEADERS = ("method", "model", "data", "split", "status", "overrides", "swept", "run_dir", "seeds")
# the column shown by default when the listed runs differ in their overrides (a sweep's swept values)
SWEPT_COLUMN = "swept"
DEDUPE_NAMES = {"none": "random", "group": "dup-grouped", "drop": "deduped"}


# ---------------------------------------------------------------------------- discovery
def is_run_dir(path: Path) -> bool:
    """A run directory holds a ``metrics.json`` or Hydra's ``.hydra`` record."""
    return (path / METRICS_FILE).is_file() or (path / HYDRA_DIR).is_dir()


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory under ``paths`` (a path may be a run, a sweep, a tree or a metrics.json)."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{str(path)!r} does not exist: pass run folders, sweep folders or metrics.json files")
        if path.is_file():
            if path.name != METRICS_FILE:
                raise DataError(f"{str(path)!r} is a file but not a {METRICS_FILE}")
            found[path.parent.resolve()] = None
            continue
        candidates = [path, *(p.parent for p in path.rglob(METRICS_FILE)), *(p.parent for p in path.rglob(HYDRA_DIR))]
        for cand in candidates:
            if is_run_dir(cand) and not _inside_checkpoint_tree(cand, path):
                found[cand.resolve()] = None
    return sorted(found)


def _inside_checkpoint_tree(cand: Path, root: Path) -> bool:
    # wandb/csv logger folders never hold .hydra or metrics.json, but guard against nested copies
    return any(part in ("checkpoints", "wandb") for part in cand.relative_to(root).parts) if cand != root else False


# ---------------------------------------------------------------------------- one run
def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(path)!r} cannot be read as JSON: {exc}") from exc


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def hydra_choices(run_dir: Path) -> dict[str, Any]:
    """Config-group choices the run composed (``experiment``, ``model``, ``data`` ...), if recorded."""
    record = read_yaml(run_dir / HYDRA_DIR / "hydra.yaml") or {}
    return dict(((record.get("hydra") or {}).get("runtime") or {}).get("choices") or {})


def hydra_overrides(run_dir: Path) -> list[str]:
    """Command-line overrides of the run (for a sweep job: the swept values)."""
    return [str(o) for o in (read_yaml(run_dir / HYDRA_DIR / "overrides.yaml") or [])]


def failure_record(run_dir: Path) -> dict[str, Any] | None:
    """The job's status record if it says the job failed (``status: FAILED`` and the error)."""
    path = run_dir / JOB_STATUS_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except DataError:
        return None
    return record if str(record.get("status", "")).upper() == "FAILED" else None


def describe_split(data_cfg: dict[str, Any], split_report: dict[str, Any]) -> str:
    """``random 90/10``, ``dup-grouped 90/10`` ...: how train/val were drawn (and how the test was chosen)."""
    dedupe = data_cfg.get("dedupe")
    if dedupe is None:
        dedupe = (split_report.get("dedupe") or {}).get("mode") if isinstance(split_report.get("dedupe"), dict) else None
    kind = DEDUPE_NAMES.get(str(dedupe), "random") if dedupe is not None else "random"
    if data_cfg.get("group_tracks"):
        kind = {"dup-grouped": "track+dup-grouped", "random": "track-grouped"}.get(kind, f"{kind}, track-grouped")
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


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One table row for a run directory (status ``ok``, ``debug``, ``failed`` or ``incomplete``)."""
    run_dir = Path(run_dir)
    choices = hydra_choices(run_dir)
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    config = metrics.get("config") or read_yaml(run_dir / "config.yaml") or read_yaml(run_dir / HYDRA_DIR / "config.yaml") or {}
    summary = metrics.get("summary") or {}
    split_report = metrics.get("data") or {}
    data_cfg = config.get("data") or {}
    model_name = choices.get("model")
    method = choices.get("experiment") or config.get("run_name") or model_name
    if "checkpoint" in metrics:  # an eval.py run: name it after the run that trained the checkpoint
        ckpt = metrics["checkpoint"]  # null for zero-shot evaluation
        method = f"eval: {(_method_of_checkpoint(ckpt) or Path(ckpt).name) if ckpt else method}"
    row: dict[str, Any] = {
        "method": method,
        "model": model_name,
        "data": choices.get("data") or _data_name(data_cfg),
        "split": describe_split(data_cfg, split_report),
        "image_size": input_size(config),
        "n_train": split_report.get("train"),
        "n_val": split_report.get("val"),
        "n_test": split_report.get("test"),
        "epochs": metrics.get("epochs_trained"),
        # a training run's best val epoch, or an eval run on split=val (eval.py writes val_accuracy)
        "val_acc": summary.get("best_val_acc", summary.get("val_accuracy")),
        **table_values(summary, "test"),
        "time_s": metrics.get("duration_s"),
        "status": "debug" if is_debug_run(config, choices) else "ok",
        "error": None,
        "seed": config.get("seed"),
        "draw": data_cfg.get("shot_seed") if data_cfg.get("shots") else None,  # which k-shot subset
        "overrides": " ".join(hydra_overrides(run_dir)),
        "run_dir": str(run_dir),
        "summary": summary,
    }
    if not metrics:
        failure = failure_record(run_dir)
        row["status"] = "failed" if failure else "incomplete"
        if failure:
            row["error"] = str(failure.get("error") or "unknown error")
    return row


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


# ---------------------------------------------------------------------------- tables
def collect(paths: Iterable[str | Path], complete_only: bool = False) -> pd.DataFrame:
    """One row per run found under ``paths`` (see :func:`all_columns`), in path order."""
    rows = [run_row(d) for d in find_run_dirs(paths)]
    frame = pd.DataFrame(rows, columns=[*all_columns(), "error", "overrides", "run_dir", "summary", "seed", "draw"])
    # what tells the listed runs apart (a sweep's swept values): shown by default (default_columns)
    frame[SWEPT_COLUMN] = varying_overrides([_without_bookkeeping(o) for o in frame["overrides"]]) if len(frame) > 1 else ""
    if complete_only:
        frame = frame[frame["status"] == "ok"].reset_index(drop=True)
    return frame


# runs that differ only in their seed: one row of the seed table
SEED_GROUP = ("method", "model", "data", "split", "image_size", "setting")
# overrides that do not make a different setting: the seeds themselves (training seed, few-shot draw)
# and bookkeeping that cannot change a number (where the run writes, what it is called, plots)
SEED_KEYS = ("seed", "data.shot_seed")
BOOKKEEPING_KEYS = ("run_name", "plots", "tags")
BOOKKEEPING_PREFIXES = ("hydra.",)


def setting_of(overrides: str) -> str:
    """The overrides that define a run's setting, sorted: everything but seeds and bookkeeping.

    ``model.optimizer.lr=0.2 seed=1 hydra.run.dir=x`` -> ``model.optimizer.lr=0.2``: two runs with the
    same setting differ only in their seed, two with different settings are different rows.
    """
    kept = []
    for item in str(overrides or "").split():
        key = _split_override(item)[0].lstrip("+~")
        if key in SEED_KEYS or key in BOOKKEEPING_KEYS or key.startswith(BOOKKEEPING_PREFIXES):
            continue
        kept.append(item)
    return " ".join(sorted(kept))


def _without_bookkeeping(overrides: str) -> str:
    """The overrides less those that cannot change a number (where the run writes, its name, plots)."""
    kept = []
    for item in str(overrides or "").split():
        key = _split_override(item)[0].lstrip("+~")
        if key in BOOKKEEPING_KEYS or key.startswith(BOOKKEEPING_PREFIXES) or key.startswith("paths."):
            continue
        kept.append(item)
    return " ".join(kept)


def default_columns(frame: pd.DataFrame) -> list[str]:
    """Every table column, plus ``swept`` after ``method`` when the listed runs differ in their overrides."""
    columns = [c for c in all_columns() if c in frame.columns]
    if SWEPT_COLUMN in frame.columns and any(str(v or "").strip() for v in frame[SWEPT_COLUMN]):
        columns.insert(columns.index("method") + 1 if "method" in columns else 0, SWEPT_COLUMN)
    return columns


def aggregate_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, model, data, split, px, setting): metric columns as ``(mean, sample std)`` over the seeds.

    The setting is the run's overrides less its seeds (:func:`setting_of`), so runs of one recipe at two
    learning rates stay two rows; where one method has several settings, the overrides that tell them
    apart are added to its ``method`` label. ``seeds`` lists the seeds aggregated. Only finished runs
    count; a group of one run keeps its plain value.
    """
    done = frame[frame["status"] == "ok"].copy()
    done["setting"] = [setting_of(o) for o in done["overrides"]]
    numeric = ["val_acc", *table_columns("test"), "epochs", "time_s"]
    rows = []
    for key, group in done.groupby(list(SEED_GROUP), dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(SEED_GROUP, key))
        row.update({c: group[c].iloc[0] for c in ("n_train", "n_val", "n_test")})
        for col in numeric:
            values = pd.to_numeric(group[col], errors="coerce").dropna()
            if len(values) > 1:
                row[col] = (float(values.mean()), float(values.std(ddof=1)))
            else:
                row[col] = float(values.iloc[0]) if len(values) else None
        row["seeds"] = _seeds_label(group)
        row["status"] = "ok"
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*all_columns(), "seeds", "setting"])
    _label_settings(table)
    return table.drop(columns="setting")


def _seeds_label(group: pd.DataFrame) -> str:
    """``0,1,2`` for training seeds; ``seed 42, draws 0,1,2`` for k-shot runs that differ in their draw."""
    seeds = ",".join(str(s) for s in group["seed"].tolist())
    draws = group["draw"].dropna().tolist()
    if not draws:
        return seeds
    if group["seed"].nunique(dropna=False) == 1:
        seeds = str(group["seed"].iloc[0])
    return f"seed {seeds}, draws {','.join(str(int(d)) for d in draws)}"


def _label_settings(table: pd.DataFrame) -> None:
    """Append ``[key=value ...]`` to the method of rows that share everything but their setting."""
    same_method = list(SEED_GROUP[:-1])
    for _, rows in table.groupby(same_method, dropna=False, sort=False):
        if len(rows) > 1:
            for index, label in zip(rows.index, varying_overrides(rows["setting"].tolist())):
                table.loc[index, "method"] = f"{table.loc[index, 'method']} [{label or 'recipe defaults'}]"


def shots_of(split: Any) -> int | None:
    """K of a row's split description (``..., 4-shot``), None for full data."""
    text = str(split or "")
    if text.endswith("-shot"):
        return int(text.rsplit(", ", 1)[-1].split("-")[0])
    return None


def plot_shots(seed_table: pd.DataFrame, path: str | Path, metric: str = "test_acc") -> Path:
    """Accuracy vs shots, one line per model (mean, with the seeds' std as error bars)."""
    from clipft.evaluation.plots import plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    table = seed_table.assign(shots=[shots_of(s) for s in seed_table["split"]])
    table = table[table["shots"].notna()]
    if table.empty:
        raise DataError("no k-shot runs (data.shots) among the runs: nothing to plot")
    for model, rows in table.groupby("model", sort=True):
        rows = rows.sort_values("shots")
        means = [100 * (v[0] if isinstance(v, tuple) else float(v)) for v in rows[metric]]
        stds = [100 * (v[1] if isinstance(v, tuple) else 0.0) for v in rows[metric]]
        ax.errorbar(rows["shots"].astype(int), means, yerr=stds, marker="o", capsize=3, label=str(model))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images per class (shots)")
    ax.set_ylabel(f"{all_columns().get(metric, metric)} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rank(frame: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Sort by ``summary[metric]`` (best first, failed runs last) and number the ranks."""
    if mode not in ("max", "min"):
        raise ConfigError(f"ranking mode must be 'max' or 'min', got {mode!r}")
    frame = frame.copy()
    frame[metric] = [_as_float((s or {}).get(metric)) for s in frame["summary"]]
    frame = frame.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")
    ranks = [i + 1 if pd.notna(v) else None for i, v in enumerate(frame[metric])]
    frame.insert(0, "rank", pd.array(ranks, dtype="Int64"))
    return frame.reset_index(drop=True)


def varying_overrides(overrides: Sequence[str]) -> list[str]:
    """Per run, only the ``key=value`` overrides that differ between runs (what a sweep swept)."""
    parsed = [dict(_split_override(o) for o in str(line).split()) for line in overrides]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1] if len(parsed) > 1 else keys
    return [" ".join(f"{k}={p[k]}" for k in varying if k in p) for p in parsed]


def swept_values(overrides: Sequence[str]) -> dict[str, list[str | None]]:
    """``key -> value per run`` for every override key whose value differs between runs (one column each)."""
    parsed = [dict(_split_override(o) for o in str(line).split()) for line in overrides]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    return {k: [p.get(k) for p in parsed] for k in keys if len(parsed) > 1 and len({p.get(k) for p in parsed}) > 1}


def _split_override(item: str) -> tuple[str, str | None]:
    key, sep, value = item.partition("=")
    return key, (value if sep else None)


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def format_table(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Display strings: accuracies in %, ECE to 3 decimals, time as ``1m23s``; empty cells as ``-``."""
    columns = list(columns or default_columns(frame))
    out = pd.DataFrame(index=frame.index)
    for col in columns:
        values = frame[col] if col in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        out[all_columns().get(col, col)] = [_format(col, v) for v in values]
    return out


def _format(col: str, value: Any) -> str:
    if isinstance(value, tuple):  # (mean, std) of a seed table
        mean, std = value
        if col in percent_column_names():
            return f"{100 * mean:.2f} ± {100 * std:.2f}"
        return f"{_format(col, mean)} ± {_format(col, std)}"
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if col in percent_column_names():
        return f"{100 * float(value):.2f}"
    if col in table_columns("test") and col not in percent_column_names():
        return f"{float(value):.3f}"
    if col == "time_s":
        seconds = int(round(float(value)))
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    if col in INTEGER_COLUMNS:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table (accuracies in %)."""
    if frame.empty:
        return "_no runs found_\n"
    shown = format_table(frame, columns)
    align = ["left" if name in TEXT_HEADERS else "right" for name in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def print_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """The same table on the terminal, with rich."""
    from rich.console import Console
    from rich.table import Table

    shown = format_table(frame, columns)
    table = Table(title=title, show_lines=False)
    for name in shown.columns:
        table.add_column(str(name), justify="left" if name in TEXT_HEADERS else "right")
    for _, values in shown.iterrows():
        table.add_row(*[str(v) for v in values])
    Console().print(table)


# ---------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipft.results",
        description="Collect runs (metrics.json under run/sweep folders) into one results table.",
    )
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders (multirun/...), trees or metrics.json files")
    parser.add_argument("--out", help="write the markdown table to this file")
    parser.add_argument("--csv", help="write every column (including overrides and run_dir) as CSV")
    parser.add_argument("--sort-by", help="rank by this metrics.json summary key (e.g. best_val_acc, test_accuracy)")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="ranking direction for --sort-by")
    parser.add_argument("--complete-only", action="store_true", help="leave out failed / unfinished runs")
    parser.add_argument("--seeds", action="store_true", help="one row per method and setting: mean ± sample std over runs that differ only in seed or few-shot draw")
    parser.add_argument("--shots-plot", help="with --seeds: write the accuracy-vs-shots figure of the k-shot runs here")
    parser.add_argument("--columns", help=f"comma-separated columns to show (default: all of {','.join(all_columns())})")
    args = parser.parse_args(argv)
    try:
        frame = collect(args.paths, complete_only=args.complete_only)
        columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
        if columns:
            unknown = [c for c in columns if c not in all_columns() and c not in ("overrides", SWEPT_COLUMN, "run_dir", "rank")]
            if unknown:
                raise ConfigError(f"unknown column(s) {unknown}; choose from {list(all_columns())} + overrides, {SWEPT_COLUMN}, run_dir")
        if args.seeds:
            frame = aggregate_seeds(frame)
            columns = [*(columns or all_columns()), "seeds"]
            if args.shots_plot:
                plot_shots(frame, args.shots_plot)
        if args.sort_by:
            frame = rank(frame, args.sort_by, args.mode)
            columns = ["rank", *(columns or default_columns(frame))]
    except (ConfigError, DataError) as exc:
        print(f"clipft error: {exc}", file=sys.stderr)
        return 1
    markdown = to_markdown(frame, columns)
    if args.out:
        atomic_write_text(args.out, markdown)
    if args.csv:
        frame.drop(columns=["summary"], errors="ignore").to_csv(args.csv, index=False)
    if sys.stdout.isatty():
        print_table(frame, columns, title=f"{len(frame)} run(s)")
    else:
        print(markdown, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
