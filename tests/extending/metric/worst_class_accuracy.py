"""Example headline metric (docs/extending.md): the worst class's accuracy, in every summary and table.

In clipft itself a headline metric is one entry in clipft/evaluation/headline.py; an extension
registers it the same way from its own file.
"""

from __future__ import annotations

from clipft.evaluation.headline import HeadlineMetric, register_headline_metric


def worst_class_accuracy(report: dict) -> float:
    """The lowest per-class accuracy over the classes present in the split (long tails hide here)."""
    return min(v["accuracy"] for v in report["per_class"].values() if v["accuracy"] is not None)


WORST_CLASS = HeadlineMetric("worst_class_accuracy", worst_class_accuracy, "worst_class_acc", "worst-class acc")


def register() -> None:
    register_headline_metric(WORST_CLASS)
