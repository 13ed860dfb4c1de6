"""``python -m clipft.results``: collect runs, optionally aggregate seeds and rank, write markdown / CSV."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from clipft.errors import ConfigError, DataError
from clipft.results.aggregate import aggregate_seeds, rank
from clipft.results.columns import SWEPT_COLUMN, all_columns
from clipft.results.plots import plot_shots
from clipft.results.protocol_cli import write_protocol
from clipft.results.protocols import PROTOCOLS
from clipft.results.render import default_columns, print_table, to_markdown
from clipft.results.rows import collect
from clipft.utils.io import atomic_write_text

# columns --columns may ask for beyond the table's own
ASKABLE_EXTRAS = ("overrides", SWEPT_COLUMN, "run_dir", "rank")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipft.results",
        description="Collect runs (metrics.json under run/sweep folders) into one results table.",
    )
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders (multirun/...), trees or metrics.json files")
    parser.add_argument("--out", help="write the markdown table to this file")
    parser.add_argument("--csv", help="write every column (including overrides and run_dir) as CSV")
    parser.add_argument("--sort-by", help="rank by this metrics.json summary key (e.g. best_val_acc, test_accuracy)")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="ranking direction for --sort-by")
    parser.add_argument("--complete-only", action="store_true", help="leave out failed / unfinished runs")
    parser.add_argument("--seeds", action="store_true", help="one row per method and setting: mean ± sample std over runs that differ only in seed or few-shot draw")
    parser.add_argument("--shots-plot", help="with --seeds: write the accuracy-vs-shots figure of the k-shot runs here")
    parser.add_argument("--columns", help=f"comma-separated columns to show (default: all of {','.join(all_columns())})")
    parser.add_argument("--protocol", choices=PROTOCOLS, help="a benchmark protocol's paper table instead (conf/protocol/): "
                        "methods x datasets + Average, mean ± std over seeds; --out / --csv write it")
    parser.add_argument("--latex", help="with --protocol: write the table as a LaTeX (booktabs) tabular here")
    parser.add_argument("--plot", help="with --protocol: write its figure here (accuracy vs shots, or bars per dataset)")
    return parser


def asked_columns(spec: str | None) -> list[str] | None:
    """The ``--columns`` list, checked against the known columns."""
    if not spec:
        return None
    columns = [c.strip() for c in spec.split(",")]
    unknown = [c for c in columns if c not in all_columns() and c not in ASKABLE_EXTRAS]
    if unknown:
        raise ConfigError(f"unknown column(s) {unknown}; choose from {list(all_columns())} + overrides, {SWEPT_COLUMN}, run_dir")
    return columns


def build_table(args: argparse.Namespace) -> tuple[pd.DataFrame, list[str] | None]:
    """The frame to show and its columns (None: the default ones)."""
    frame = collect(args.paths, complete_only=args.complete_only)
    columns = asked_columns(args.columns)
    if args.seeds:
        frame = aggregate_seeds(frame)
        columns = [*(columns or all_columns()), "seeds"]
        if args.shots_plot:
            plot_shots(frame, args.shots_plot)
    if args.sort_by:
        frame = rank(frame, args.sort_by, args.mode)
        columns = ["rank", *(columns or default_columns(frame))]
    return frame, columns


def write_outputs(frame: pd.DataFrame, columns: list[str] | None, args: argparse.Namespace) -> None:
    markdown = to_markdown(frame, columns)
    if args.out:
        atomic_write_text(args.out, markdown)
    if args.csv:
        frame.drop(columns=["summary"], errors="ignore").to_csv(args.csv, index=False)
    if sys.stdout.isatty():
        print_table(frame, columns, title=f"{len(frame)} run(s)")
    else:
        print(markdown, end="")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.protocol:
            write_protocol(args)
            return 0
        frame, columns = build_table(args)
    except (ConfigError, DataError) as exc:
        print(f"clipft error: {exc}", file=sys.stderr)
        return 1
    write_outputs(frame, columns, args)
    return 0
