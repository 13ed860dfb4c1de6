"""Display: the rows as strings (accuracies in %, ECE to 3 decimals, time as ``1m23s``), markdown, the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from clipft.evaluation.headline import table_columns
from clipft.results.columns import INTEGER_COLUMNS, SWEPT_COLUMN, TEXT_HEADERS, all_columns, percent_column_names


def default_columns(frame: pd.DataFrame) -> list[str]:
    """Every table column, plus ``swept`` after ``method`` when the listed runs differ in their overrides."""
    columns = [c for c in all_columns() if c in frame.columns]
    if SWEPT_COLUMN in frame.columns and any(str(v or "").strip() for v in frame[SWEPT_COLUMN]):
        columns.insert(columns.index("method") + 1 if "method" in columns else 0, SWEPT_COLUMN)
    return columns


def format_table(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Display strings: accuracies in %, ECE to 3 decimals, time as ``1m23s``; empty cells as ``-``."""
    columns = list(columns or default_columns(frame))
    headers = all_columns()
    out = pd.DataFrame(index=frame.index)
    for col in columns:
        values = frame[col] if col in frame.columns else pd.Series([None] * len(frame), index=frame.index)
        out[headers.get(col, col)] = [format_value(col, v) for v in values]
    return out


def _is_empty(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value))


def _duration(value: Any) -> str:
    seconds = int(round(float(value)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def format_value(col: str, value: Any) -> str:
    """One cell as shown; a ``(mean, std)`` pair of a seed table as ``mean ± std``."""
    percent = col in percent_column_names()
    if isinstance(value, tuple):  # (mean, std) of a seed table
        mean, std = value
        return f"{100 * mean:.2f} ± {100 * std:.2f}" if percent else f"{format_value(col, mean)} ± {format_value(col, std)}"
    if _is_empty(value):
        return "-"
    if percent:
        return f"{100 * float(value):.2f}"
    if col in table_columns("test"):
        return f"{float(value):.3f}"
    if col == "time_s":
        return _duration(value)
    if col in INTEGER_COLUMNS:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table (accuracies in %)."""
    if frame.empty:
        return "_no runs found_\n"
    shown = format_table(frame, columns)
    align = ["left" if name in TEXT_HEADERS else "right" for name in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"


def print_table(frame: pd.DataFrame, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """The same table on the terminal, with rich."""
    from rich.console import Console
    from rich.table import Table

    shown = format_table(frame, columns)
    table = Table(title=title, show_lines=False)
    for name in shown.columns:
        table.add_column(str(name), justify="left" if name in TEXT_HEADERS else "right")
    for _, values in shown.iterrows():
        table.add_row(*[str(v) for v in values])
    Console().print(table)
