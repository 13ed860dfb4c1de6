"""A protocol table's figure: accuracy vs shots per dataset and for the Average (one line per method,
the seeds' std as error bars) when the table has several K; otherwise grouped bars per column
(base-to-novel: the HM)."""

from __future__ import annotations

import math
from pathlib import Path

from clipft.results.protocols import AVERAGE, ProtocolTable


def _panels(table: ProtocolTable) -> list[str]:
    averaged = any((AVERAGE, table.metrics[-1]) in cells for cells in table.cells.values())
    return [*table.columns, *([AVERAGE] if averaged else [])]


def plot_protocol(table: ProtocolTable, path: str | Path) -> Path:
    """Write the figure of ``table`` to ``path`` (png, pdf, svg: the suffix decides)."""
    from clipft.evaluation.plots import plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = _shots_figure(plt, table) if table.by_shots else _bars_figure(plt, table)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight": the legend beside the panels is kept
    plt.close(fig)
    return path


def _shots_figure(plt, table: ProtocolTable):
    panels = _panels(table)
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width, height = (4.8, 3.6) if len(panels) == 1 else (3.2, 2.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    methods = list(dict.fromkeys(method for method, _ in table.rows))
    styles = _method_styles(plt, methods)
    metric = table.metrics[-1]  # acc (or HM)
    shots = sorted({k for _, k in table.rows if k is not None})
    for ax, column in zip(axes.flat, panels):
        for method in methods:
            points = sorted((k, cells[(column, metric)]) for (m, k), cells in table.cells.items()
                            if m == method and k is not None and (column, metric) in cells)
            if points:
                ax.errorbar([k for k, _ in points], [100 * c.mean for _, c in points],
                            yerr=[100 * (c.std or 0.0) for _, c in points], capsize=2, label=method, **styles[method])
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.minorticks_off()
        ax.set_title(column, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("accuracy (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)  # beside: never over a line
    fig.supxlabel("training images per class (K)", fontsize=9)
    return fig


def _method_styles(plt, methods: list[str]) -> dict[str, dict[str, str]]:
    """A colour and a marker per method: the default cycle has 10 colours, a grid of methods often more."""
    colours = plt.get_cmap("tab20").colors if len(methods) > 10 else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>PX*hp"
    return {m: {"color": colours[i % len(colours)], "marker": markers[i % len(markers)]} for i, m in enumerate(methods)}


def _bars_figure(plt, table: ProtocolTable):
    panels = _panels(table)
    metric = table.metrics[-1]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(panels) + 2), 4))
    width = 0.8 / max(len(table.rows), 1)
    for index, (method, shots) in enumerate(table.rows):
        cells = table.cells[(method, shots)]
        xs = [i + index * width for i, column in enumerate(panels) if (column, metric) in cells]
        ys = [100 * cells[(column, metric)].mean for column in panels if (column, metric) in cells]
        errs = [100 * (cells[(column, metric)].std or 0.0) for column in panels if (column, metric) in cells]
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=method if shots is None else f"{method} ({shots}-shot)")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(panels))], panels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("HM (%)" if metric == "hm" else "accuracy (%)")
    ax.set_title(table.protocol)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return fig
