"""The accuracy-vs-shots figure of a seed table's k-shot rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipft.errors import DataError
from clipft.results.aggregate import shots_of
from clipft.results.columns import all_columns


def plot_shots(seed_table: pd.DataFrame, path: str | Path, metric: str = "test_acc") -> Path:
    """Accuracy vs shots, one line per model (mean, with the seeds' std as error bars)."""
    from clipft.evaluation.plots import plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = seed_table.assign(shots=[shots_of(s) for s in seed_table["split"]])
    table = table[table["shots"].notna()]
    if table.empty:
        raise DataError("no k-shot runs (data.shots) among the runs: nothing to plot")
    fig, ax = plt.subplots(figsize=(6, 4.5))
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
