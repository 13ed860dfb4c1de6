"""The run's figures (matplotlib, Agg backend: no display needed).

Every function takes plain numbers and a target path, writes one PNG and returns the path.
Figures scale with the number of classes so a 58-class confusion matrix stays readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # noqa: E402 - before pyplot, so no display is ever needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from clipft.evaluation.metrics import ECE_BINS  # noqa: E402

MAX_LABEL_CHARS = 28
DPI = 110


def short_label(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _square_size(num_classes: int) -> float:
    return float(np.clip(0.22 * num_classes + 3.0, 5.0, 22.0))


def _tick_fontsize(num_classes: int) -> float:
    return float(np.clip(400.0 / max(num_classes, 1), 5.0, 10.0))


def save_figure(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Write a PNG and free the figure; ``tight=False`` skips the second layout pass (large matrices)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path


def _matrix_plot(
    matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str, xlabel: str, ylabel: str,
    cmap: str, vmin: float, vmax: float, colorbar_label: str,
) -> Path:
    n = len(class_names)
    size, fs = _square_size(n), _tick_fontsize(n)
    labels = [short_label(c) for c in class_names]
    # Fixed layout computed from the label length: no tight-bbox pass, which doubles the draw time at 58 classes.
    margin = 0.62 * fs * max(len(s) for s in labels) / 72 + 0.6
    width, height = margin + size + 1.4, margin + size + 0.5
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((margin / width, margin / height, size / width, size / height))
    cax = fig.add_axes(((margin + size + 0.2) / width, margin / height, 0.25 / width, size / height))
    im = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fs)
    ax.set_yticks(range(n), labels, fontsize=fs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n <= 20:  # numbers in cells only where they fit
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                if value != 0:
                    dark = (value - vmin) / (vmax - vmin + 1e-12) > 0.6
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=fs * 0.8,
                            color="white" if dark else "black")
    fig.colorbar(im, cax=cax, label=colorbar_label)
    return save_figure(fig, path, tight=False)


def plot_confusion_matrix(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                          title: str | None = None, split: str = "test") -> Path:
    """Row-normalised confusion matrix: cell (i, j) = share of class i predicted as j; the title names the split."""
    if title is None:
        title = f"Confusion matrix, {split} split (rows normalised)"
    counts = np.asarray(confusion, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    return _matrix_plot(normalised, class_names, path, title, "predicted", "true", "Blues", 0.0, 1.0,
                        "share of the true class")


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS):
    """Per equal-width confidence bin: mean confidence, accuracy and count (for drawing only)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / np.maximum(count, 1)
    acc = np.bincount(idx, weights=correct.astype(float), minlength=n_bins) / np.maximum(count, 1)
    return edges, mean_conf, acc, count


def plot_reliability(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path,
                     n_bins: int = ECE_BINS) -> Path:
    """Reliability diagram; ``curves`` maps a label to ``(probs, targets, ece)`` (e.g. before/after scaling)."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    width = 1.0 / n_bins
    for k, (label, (probs, targets, ece)) in enumerate(curves.items()):
        edges, mean_conf, acc, count = reliability_bins(np.asarray(probs), np.asarray(targets), n_bins)
        centers = edges[:-1] + width / 2
        seen = count > 0
        offset = (k - (len(curves) - 1) / 2) * width / max(len(curves), 1)
        ax.bar(centers[seen] + offset, acc[seen], width=width / max(len(curves), 1), alpha=0.6,
               edgecolor="black", lw=0.5, label=f"{label} (ECE {ece:.3f})")
        ax.plot(mean_conf[seen], acc[seen], "o-", ms=3, lw=1)
        hist.bar(centers + offset, count, width=width / max(len(curves), 1), alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability ({n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("confidence (max probability)")
    hist.set_ylabel("samples")
    return save_figure(fig, path)


# calibration errors: 0 is best and they are not accuracies, so they get their own panel and scale
ERROR_METRIC_MARKERS = ("ece",)


def is_error_metric(name: str) -> bool:
    return any(marker in name.lower() for marker in ERROR_METRIC_MARKERS)


def plot_metrics_summary(values: Mapping[str, float], path: str | Path, title: str = "Test metrics") -> Path:
    """Horizontal bars of the headline numbers: accuracies / F1 on one panel (higher is better, in [0, 1]),
    calibration errors (ECE: lower is better) on a second panel with its own scale."""
    scores = {k: float(v) for k, v in values.items() if not is_error_metric(k)}
    errors = {k: float(v) for k, v in values.items() if is_error_metric(k)}
    panels = [(group, label) for group, label in ((scores, "score (higher is better)"),
                                                  (errors, "calibration error (lower is better)")) if group]
    if not panels:
        panels = [({}, "score")]
    heights = [max(len(group), 1) for group, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.5, 0.45 * sum(heights) + 1.2 * len(panels)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (group, label) in zip(axes[:, 0], panels):
        names, nums = list(group), list(group.values())
        error_panel = bool(group) and all(is_error_metric(n) for n in names)
        bars = ax.barh(range(len(names)), nums, color="#C44E52" if error_panel else "#4C72B0")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        top = max([*nums, 0.0])
        limit = (max(top * 1.25, 0.05) if error_panel else 1.08)
        ax.set_xlim(0, limit)
        for bar, v in zip(bars, nums):
            ax.text(bar.get_width() + 0.01 * limit, bar.get_y() + bar.get_height() / 2, f"{v:.3f}", va="center", fontsize=9)
        ax.set_xlabel(label)
    axes[0, 0].set_title(title)
    return save_figure(fig, path)


def plot_per_class_accuracy(per_class: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Per-class accuracy (recall), worst classes first, with each class's test support.

    Classes without test images have no accuracy; they are counted in the title, not drawn as 0.
    """
    items = sorted(((k, v) for k, v in per_class.items() if v.get("accuracy") is not None),
                   key=lambda kv: (kv[1]["accuracy"], kv[0]))
    absent = len(per_class) - len(items)
    n = len(items)
    fs = float(np.clip(320.0 / max(n, 1), 5.5, 10.0))
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.17 * n + 1.2)))
    accs = [v["accuracy"] for _, v in items]
    colors = plt.cm.RdYlGn(np.asarray(accs))
    ax.barh(range(n), accs, color=colors, edgecolor="black", lw=0.3)
    ax.set_yticks(range(n), [f"{short_label(k)} (n={v.get('support', 0)})" for k, v in items], fontsize=fs)
    ax.invert_yaxis()  # worst at the top
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (recall)")
    ax.set_title("Per-class accuracy, worst first" + (f" ({absent} classes with no test images not shown)" if absent else ""))
    return save_figure(fig, path)


def plot_class_similarity(similarity: np.ndarray, class_names: Sequence[str], path: str | Path) -> Path:
    """Cosine similarity of the class text embeddings: bright off-diagonal cells are names the model confuses."""
    sim = np.asarray(similarity, dtype=np.float64)
    off = sim[~np.eye(len(sim), dtype=bool)]
    vmin = float(min(off.min(), 0.0)) if off.size else 0.0
    return _matrix_plot(sim, class_names, path, "Class text-embedding cosine similarity", "class", "class",
                        "viridis", vmin, 1.0, "cosine similarity")


def training_curve_panels(history: Sequence[Mapping[str, Any]]) -> list[tuple[list[str], str]]:
    """``[(keys, title), ...]`` of :func:`plot_training_curves`: cross-entropy on train and val on one axis
    (``train/loss_cls`` when the objective is a combination, else ``train/loss``), the combined objective
    on its own axis (FLYP: contrastive + CE, not comparable with ``val/loss``), then the val metrics."""
    keys = sorted({k for rec in history for k in rec if k != "epoch"})
    combined = "train/loss_cls" in keys  # train/loss is then the weighted sum, train/loss_cls its CE part
    cross_entropy = [k for k in ("train/loss_cls" if combined else "train/loss", "val/loss") if k in keys]
    panels = [(cross_entropy, "cross-entropy (train vs val)")]
    if combined:
        panels.append(([k for k in ("train/loss", "train/loss_sim") if k in keys], "training objective (combined loss)"))
    panels.append(([k for k in keys if k.startswith("val/") and not k.endswith("/loss")], "validation metrics"))
    return panels


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """The per-epoch history drawn as :func:`training_curve_panels` lays it out; None when there is no history."""
    if not history:
        return None
    panels = training_curve_panels(history)
    combined = any(title.startswith("training objective") for _, title in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
    for ax, (group, title) in zip(axes, panels):
        for key in group:
            pts = [(r["epoch"], r[key]) for r in history if key in r]
            if pts:
                xs, ys = zip(*pts)
                label = "train/loss (combined)" if combined and key == "train/loss" else key
                ax.plot(xs, ys, "o-", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(title)
        if group:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
