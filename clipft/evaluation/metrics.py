"""Summary metrics from a fixed prediction set, all computed with torchmetrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

ECE_BINS = 15
TOP_K = 5  # the report's ``top5_accuracy``: top-min(5, classes), the k used beside it as ``top5_k``
PROB_FLOOR = 1e-12  # keeps log(prob) finite for the NLL of a probability that underflowed to 0


def most_confident_errors(probs: torch.Tensor, targets: torch.Tensor) -> list[int]:
    """Indices of the misclassified samples, most confident (top probability) first: the order of
    ``errors.csv`` and of W&B's misclassified-images table."""
    conf, pred = probs.max(dim=-1)
    wrong = (pred != targets).nonzero().flatten()
    return wrong[conf[wrong].argsort(descending=True)].tolist()


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width confidence bins (torchmetrics' ``norm='l1'``)."""
    c = probs.shape[-1]
    return float(multiclass_calibration_error(probs.float(), targets.long(), num_classes=c, n_bins=n_bins, norm="l1"))


def negative_log_likelihood(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean NLL of the true class: the quantity temperature scaling minimises."""
    return float(F.nll_loss(probs.float().clamp_min(PROB_FLOOR).log(), targets.long()))


def classification_report(probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5 accuracy, macro-F1, 15-bin ECE, NLL, per-class accuracy/precision/recall/F1, confusion matrix.

    ``top5_accuracy`` is always there, whatever the class count: with fewer than 5 classes it is
    top-``c`` accuracy (1.0), and ``top5_k`` records the k it was computed with (5, or the class count).

    ``per_class[name]['accuracy']`` is that class's recall (the share of its images classified
    correctly), ``None`` when the class has no test images (precision: ``None`` when never
    predicted) rather than torchmetrics' 0; macro-F1 leaves out classes neither present nor
    predicted. The confusion matrix is raw counts, rows = true class, columns = predicted.
    """
    probs = probs.float()
    targets = targets.long()
    c = len(class_names)
    top_k = min(TOP_K, c)
    recall = multiclass_recall(probs, targets, num_classes=c, average=None)
    precision = multiclass_precision(probs, targets, num_classes=c, average=None)
    f1 = multiclass_f1_score(probs, targets, num_classes=c, average=None)
    support = torch.bincount(targets, minlength=c)
    predicted = torch.bincount(probs.argmax(dim=-1), minlength=c)
    per_class = {
        name: {
            # per-class accuracy == recall of that class; undefined (null) without test images of it
            "accuracy": float(recall[i]) if support[i] > 0 else None,
            "precision": float(precision[i]) if predicted[i] > 0 else None,
            "recall": float(recall[i]) if support[i] > 0 else None,
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "num_samples": int(len(targets)),
        "accuracy": float(multiclass_accuracy(probs, targets, num_classes=c, average="micro")),
        "top5_accuracy": float(multiclass_accuracy(probs, targets, num_classes=c, average="micro", top_k=top_k)),
        "top5_k": top_k,
        "macro_f1": float(multiclass_f1_score(probs, targets, num_classes=c, average="macro")),
        "ece": expected_calibration_error(probs, targets),
        "nll": negative_log_likelihood(probs, targets),
        "per_class": per_class,
        "confusion_matrix": multiclass_confusion_matrix(probs, targets, num_classes=c).tolist(),
    }
