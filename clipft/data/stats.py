"""Dataset statistics: per-channel mean/std (the seed-style normalisation) and class balance."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipft.data.cache import resize_square
from clipft.data.images import load_rgb


def compute_mean_std(paths: Sequence[str | os.PathLike], image_size: int | None = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixels in [0, 1] over ``paths``.

    ``image_size`` resizes each image to a square first so every image weighs the same and the
    pass stays cheap; ``None`` uses the raw pixels (large images then weigh more).
    """
    if not paths:
        raise ValueError("compute_mean_std needs at least one image")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for path in paths:
        image = load_rgb(path)
        if image_size:
            pixels = resize_square(image, image_size).reshape(3, -1).astype(np.float64) / 255.0
        else:
            pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3).T / 255.0
        total += pixels.sum(axis=1)
        total_sq += (pixels**2).sum(axis=1)
        count += pixels.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def class_balance(labels: Sequence[int], class_names: Sequence[str]) -> dict[str, Any]:
    """Counts per class, min/max, imbalance ratio (max/min over present classes) and the rarest classes."""
    counter = Counter(labels)
    counts = [counter.get(c, 0) for c in range(len(class_names))]
    present = [n for n in counts if n > 0]
    order = sorted(range(len(class_names)), key=lambda c: (counts[c], c))
    return {
        "counts": {class_names[c]: counts[c] for c in range(len(class_names))},
        "min": min(counts) if counts else 0,
        "max": max(counts) if counts else 0,
        "imbalance_ratio": round(max(present) / min(present), 2) if present else None,
        "missing_classes": [class_names[c] for c in range(len(class_names)) if counts[c] == 0],
        "rarest": [f"{class_names[c]} ({counts[c]})" for c in order[:5]],
    }
