"""WiSE-FT's figure: in-distribution vs shifted accuracy along the interpolation (Wortsman et al. 2022, Fig. 1).

    python -m clipft.evaluation.wise_ft_plot ID_RUN OOD_RUN [--out wise_ft.png]

``ID_RUN`` and ``OOD_RUN`` are ``eval.py ckpt_path=... wise_ft.alphas=[...]`` runs of one checkpoint
on two splits (e.g. ``split=val`` and ``split=test``); each ``metrics.json["wise_ft"]`` row is one
point, alpha = 0 the zero-shot model and 1 the fine-tuned one. The CSV next to the figure holds
the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from clipft.errors import DataError
from clipft.utils.io import atomic_write_text


def wise_ft_points(id_metrics: dict, ood_metrics: dict) -> list[tuple[float, float, float]]:
    """``[(alpha, id_accuracy, ood_accuracy)]`` for the alphas both runs scored, by alpha."""
    id_rows, ood_rows = id_metrics.get("wise_ft") or {}, ood_metrics.get("wise_ft") or {}
    if not id_rows or not ood_rows:
        raise DataError("both runs need a wise_ft table: run eval.py with wise_ft.alphas=[0,0.25,0.5,0.75,1.0]")
    if id_metrics.get("checkpoint") != ood_metrics.get("checkpoint"):
        raise DataError(
            f"the runs evaluated different checkpoints ({id_metrics.get('checkpoint')} vs {ood_metrics.get('checkpoint')})"
        )
    shared = sorted(set(id_rows) & set(ood_rows), key=float)
    return [(float(a), float(id_rows[a]["accuracy"]), float(ood_rows[a]["accuracy"])) for a in shared]


def plot_wise_ft(points: Sequence[tuple[float, float, float]], path: str | Path, labels: tuple[str, str] = ("val", "test")) -> Path:
    from clipft.evaluation.plots import plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, ids, oods = zip(*points)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([100 * x for x in ids], [100 * y for y in oods], "-o", color="tab:blue", label="WiSE-FT (alpha)")
    for a, x, y in points:
        ax.annotate(f"{a:g}", (100 * x, 100 * y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ends = {0.0: ("zero-shot", "tab:green"), 1.0: ("fine-tuned", "tab:red")}
    for a, x, y in points:
        if a in ends:
            ax.scatter([100 * x], [100 * y], s=90, color=ends[a][1], label=ends[a][0], zorder=3)
    ax.set_xlabel(f"{labels[0]} accuracy (%)  [in-distribution]")
    ax.set_ylabel(f"{labels[1]} accuracy (%)  [shifted]")
    ax.set_title("WiSE-FT: weight-space interpolation")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _read(run: str) -> dict:
    path = Path(run)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"{run!r}: no metrics.json (give an eval.py run folder)")
    return json.loads(path.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipft.evaluation.wise_ft_plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("id_run", help="eval.py run with wise_ft.alphas on the in-distribution split (e.g. split=val)")
    parser.add_argument("ood_run", help="the same checkpoint and alphas on the shifted split (e.g. split=test)")
    parser.add_argument("--out", default="wise_ft.png", help="figure path (a .csv of the points is written beside it)")
    args = parser.parse_args(argv)
    try:
        id_metrics, ood_metrics = _read(args.id_run), _read(args.ood_run)
        points = wise_ft_points(id_metrics, ood_metrics)
    except DataError as exc:
        print(f"clipft error: {exc}", file=sys.stderr)
        return 1
    labels = (str(id_metrics.get("split", "val")), str(ood_metrics.get("split", "test")))
    out = plot_wise_ft(points, args.out, labels)
    rows = ["alpha,id_accuracy,ood_accuracy", *(f"{a:g},{x:.4f},{y:.4f}" for a, x, y in points)]
    atomic_write_text(out.with_suffix(".csv"), "\n".join(rows) + "\n")
    print("\n".join(rows))
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
