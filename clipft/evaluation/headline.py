"""The one list of headline metrics: what every run's summary, the results table and the sweep summary show.

A headline metric is computed from a split's :func:`clipft.evaluation.metrics.classification_report`.
``train.py`` and ``eval.py`` write ``<split>_<name>`` into ``metrics.json["summary"]``;
``python -m clipft.results`` and the sweep summary show the scalar ones as ``<split>_<column>``
columns. Adding a headline metric is one entry here (or one :func:`register_headline_metric` call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clipft import registry


@dataclass(frozen=True)
class HeadlineMetric:
    """``name``: the summary key's suffix; ``column``/``header``: the results table's; ``percent``: shown x100;
    ``table``: a scalar the tables show (False for per-class dicts and numbers kept in the summary only)."""

    name: str
    compute: Callable[[dict[str, Any]], Any]
    column: str
    header: str
    percent: bool = True
    table: bool = True


HEADLINE_METRICS: list[HeadlineMetric] = [
    HeadlineMetric("accuracy", lambda r: r["accuracy"], "acc", "acc"),
    HeadlineMetric("macro_f1", lambda r: r["macro_f1"], "macro_f1", "macro-F1"),
    HeadlineMetric("ece", lambda r: r["ece"], "ece", "ECE", percent=False),
    # top-min(5, classes): the key is stable on any class count, top5_k says which k it is
    HeadlineMetric("top5_accuracy", lambda r: r["top5_accuracy"], "top5_acc", "top-5 acc", table=False),
    HeadlineMetric("top5_k", lambda r: r["top5_k"], "top5_k", "top-5 k", percent=False, table=False),
    HeadlineMetric(
        "per_class_accuracy",
        lambda r: {k: v["accuracy"] for k, v in r["per_class"].items()},
        "per_class_acc",
        "per-class acc",
        table=False,
    ),
]


def register_headline_metric(metric: HeadlineMetric) -> None:
    """Add (or replace, by name) a headline metric; also listed in :mod:`clipft.registry` (kind ``metric``)."""
    HEADLINE_METRICS[:] = [m for m in HEADLINE_METRICS if m.name != metric.name] + [metric]
    registry.register("metric", metric, name=metric.name, description=metric.header)


for _metric in HEADLINE_METRICS:
    registry.register("metric", _metric, name=_metric.name, description=_metric.header)


def headline_summary(report: dict[str, Any], split: str = "test") -> dict[str, Any]:
    """``{<split>_<name>: value}`` for every headline metric of one split's report."""
    return {f"{split}_{m.name}": m.compute(report) for m in HEADLINE_METRICS}


def table_columns(split: str = "test") -> dict[str, str]:
    """``{column: header}`` of the scalar headline metrics, e.g. ``{"test_acc": "test acc"}``."""
    return {f"{split}_{m.column}": f"{split} {m.header}" for m in HEADLINE_METRICS if m.table}


def percent_columns(split: str = "test") -> list[str]:
    return [f"{split}_{m.column}" for m in HEADLINE_METRICS if m.table and m.percent]


def table_values(summary: dict[str, Any], split: str = "test") -> dict[str, Any]:
    """A ``metrics.json`` summary's scalar headline values under their table columns."""
    return {f"{split}_{m.column}": summary.get(f"{split}_{m.name}") for m in HEADLINE_METRICS if m.table}


def summary_keys(split: str = "test") -> list[str]:
    """The summary keys the tables already show."""
    return [f"{split}_{m.name}" for m in HEADLINE_METRICS if m.table]
