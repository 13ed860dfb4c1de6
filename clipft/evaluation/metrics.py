"""Summary metrics from a fixed prediction set, all computed with torchmetrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

ECE_BINS = 15


def classification_report(probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5 accuracy, macro-F1, 15-bin ECE, per-class accuracy/precision/recall, confusion matrix."""
    probs = probs.float()
    targets = targets.long()
    c = len(class_names)
    top_k = min(5, c)
    recall = multiclass_recall(probs, targets, num_classes=c, average=None)
    precision = multiclass_precision(probs, targets, num_classes=c, average=None)
    support = torch.bincount(targets, minlength=c)
    per_class = {
        name: {
            "accuracy": float(recall[i]),  # per-class accuracy == recall of that class
            "precision": float(precision[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "num_samples": int(len(targets)),
        "accuracy": float(multiclass_accuracy(probs, targets, num_classes=c, average="micro")),
        f"top{top_k}_accuracy": float(multiclass_accuracy(probs, targets, num_classes=c, average="micro", top_k=top_k)),
        "macro_f1": float(multiclass_f1_score(probs, targets, num_classes=c, average="macro")),
        "ece": float(multiclass_calibration_error(probs, targets, num_classes=c, n_bins=ECE_BINS, norm="l1")),
        "per_class": per_class,
        "confusion_matrix": multiclass_confusion_matrix(probs, targets, num_classes=c).tolist(),
    }
