"""Tables computed from rows: the seed table (mean ± sample std over seeds) and the ranking.

Pure functions of a rows frame (:func:`clipft.results.rows.rows_table`): no files are read here, so
any table built on the rows (a benchmark table, a report) gets the same numbers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from clipft.errors import ConfigError
from clipft.results.columns import all_columns, metric_columns
from clipft.results.overrides import setting_of, varying_overrides

# runs that differ only in their seed: one row of the seed table
SEED_GROUP = ("method", "model", "data", "split", "image_size", "setting")
SIZE_COLUMNS = ("n_train", "n_val", "n_test")


def mean_and_spread(values: pd.Series) -> tuple[float, float] | float | None:
    """``(mean, sample std)`` of the numbers among ``values``; one number stays plain; none is None."""
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if len(numbers) > 1:
        return (float(numbers.mean()), float(numbers.std(ddof=1)))
    return float(numbers.iloc[0]) if len(numbers) else None


def aggregate_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, model, data, split, px, setting): metric columns as ``(mean, sample std)`` over the seeds.

    The setting is the run's overrides less its seeds (:func:`setting_of`), so runs of one recipe at two
    learning rates stay two rows; where one method has several settings, the overrides that tell them
    apart are added to its ``method`` label. ``seeds`` lists the seeds aggregated. Only finished runs
    count; a group of one run keeps its plain value.
    """
    done = frame[frame["status"] == "ok"].copy()
    done["setting"] = [setting_of(o) for o in done["overrides"]]
    rows = []
    for key, group in done.groupby(list(SEED_GROUP), dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(SEED_GROUP, key))
        row.update({c: group[c].iloc[0] for c in SIZE_COLUMNS})
        row.update({c: mean_and_spread(group[c]) for c in metric_columns()})
        row["seeds"] = seeds_label(group)
        row["status"] = "ok"
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*all_columns(), "seeds", "setting"])
    _label_settings(table)
    return table.drop(columns="setting")


def seeds_label(group: pd.DataFrame) -> str:
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


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def rank(frame: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Sort by ``summary[metric]`` (best first, failed runs last) and number the ranks."""
    if mode not in ("max", "min"):
        raise ConfigError(f"ranking mode must be 'max' or 'min', got {mode!r}")
    frame = frame.copy()
    if "summary" in frame:  # one row per run
        frame[metric] = [_as_float((s or {}).get(metric)) for s in frame["summary"]]
        key = metric
    else:  # a --seeds table: its (mean, std) column of that metric, ranked by the mean
        column = summary_column(metric, frame)
        key = "_rank_key"
        frame[key] = [_as_float(v[0] if isinstance(v, tuple) else v) for v in frame[column]]
    frame = frame.sort_values(key, ascending=(mode == "min"), na_position="last", kind="stable")
    ranks = [i + 1 if pd.notna(v) else None for i, v in enumerate(frame[key])]
    frame.insert(0, "rank", pd.array(ranks, dtype="Int64"))
    return frame.drop(columns=[c for c in ("_rank_key",) if c in frame]).reset_index(drop=True)


def summary_column(metric: str, frame: pd.DataFrame) -> str:
    """The seed table's column of a summary key (``test_accuracy`` -> ``test_acc``, ``best_val_acc`` -> ``val_acc``)."""
    from clipft.evaluation.headline import HEADLINE_METRICS

    names = {f"test_{m.name}": f"test_{m.column}" for m in HEADLINE_METRICS}
    names.update({"best_val_acc": "val_acc", "val_accuracy": "val_acc"})
    column = metric if metric in frame else names.get(metric)
    if column not in frame:
        raise ConfigError(f"--sort-by {metric}: a --seeds table ranks by one of its columns "
                          f"({', '.join(sorted(set(names) | {'val_acc', 'test_acc'}))})")
    return column
