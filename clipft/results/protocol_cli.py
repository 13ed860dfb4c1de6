"""``python -m clipft.results --protocol P SWEEP...``: the protocol's table as Markdown (stdout or --out),
CSV (--csv), LaTeX (--latex) and its figure (--plot)."""

from __future__ import annotations

import argparse

from clipft.results.protocol_plots import plot_protocol
from clipft.results.protocol_render import to_csv, to_latex, to_markdown
from clipft.results.protocols import protocol_table
from clipft.results.rows import collect
from clipft.utils.io import atomic_write_text


def write_protocol(args: argparse.Namespace) -> None:
    """Collect the runs under ``args.paths`` and write the protocol table wherever ``args`` asks."""
    table = protocol_table(collect(args.paths), args.protocol)
    markdown = to_markdown(table)
    for path, text in ((args.out, markdown), (args.csv, to_csv(table)), (args.latex, to_latex(table))):
        if path:
            atomic_write_text(path, text)
    if args.plot:
        plot_protocol(table, args.plot)
    print(markdown, end="")
