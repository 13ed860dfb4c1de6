"""A protocol table (:class:`~clipft.results.protocols.ProtocolTable`) as a paper prints it: Markdown,
CSV (mean and std as numbers) and LaTeX (booktabs; the best mean of each column of one K in bold).

Accuracies are shown in % with two decimals, ``mean ± std`` (std over seeds; a single seed: the mean).
"""

from __future__ import annotations

import csv
import io

from clipft.results.protocols import AVERAGE, Cell, ProtocolTable

METRIC_NAMES = {"acc": "", "base": "Base", "novel": "Novel", "hm": "HM"}


def header_keys(table: ProtocolTable) -> list[tuple[str, str]]:
    """The value columns in order: each (column, metric), then the Average's (when any row has one)."""
    keys = [(column, metric) for column in table.columns for metric in table.metrics]
    averages = [(AVERAGE, m) for m in table.metrics if any((AVERAGE, m) in cells for cells in table.cells.values())]
    return keys + averages


def header_name(key: tuple[str, str]) -> str:
    column, metric = key
    return f"{column} {METRIC_NAMES[metric]}".strip()


def format_cell(cell: Cell | None, pm: str = "±") -> str:
    if cell is None:
        return "-"
    if cell.std is None:
        return f"{100 * cell.mean:.2f}"
    return f"{100 * cell.mean:.2f} {pm} {100 * cell.std:.2f}"


def _lead(table: ProtocolTable) -> list[str]:
    return ["Method", "K"] if table.by_shots else ["Method"]


def _lead_values(table: ProtocolTable, method: str, shots: int | None) -> list[str]:
    return [method, "-" if shots is None else str(shots)] if table.by_shots else [method]


def to_markdown(table: ProtocolTable) -> str:
    """A GitHub-flavoured table: one line per method (and K), one column per dataset (x base/novel/HM) + Average."""
    keys = header_keys(table)
    lead = _lead(table)
    lines = ["| " + " | ".join([*lead, *map(header_name, keys)]) + " |",
             "| " + " | ".join([":--"] * len(lead) + ["--:"] * len(keys)) + " |"]
    for method, shots in table.rows:
        cells = table.cells[(method, shots)]
        values = [*_lead_values(table, method, shots), *(format_cell(cells.get(k)) for k in keys)]
        lines.append("| " + " | ".join(values) + " |")
    return f"**{table.protocol}** (accuracy %, mean ± std over seeds)\n\n" + "\n".join(lines) + "\n"


def to_csv(table: ProtocolTable) -> str:
    """One line per row: method, shots, then ``<header> mean`` / ``<header> std`` / ``<header> seeds`` (in %)."""
    keys = header_keys(table)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["method", "shots", *[f"{header_name(k)} {part}" for k in keys for part in ("mean", "std", "seeds")]])
    for method, shots in table.rows:
        cells = table.cells[(method, shots)]
        values: list[object] = [method, "" if shots is None else shots]
        for key in keys:
            cell = cells.get(key)
            values += ["", "", ""] if cell is None else [
                f"{100 * cell.mean:.4f}", "" if cell.std is None else f"{100 * cell.std:.4f}", cell.n]
        writer.writerow(values)
    return out.getvalue()


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def _best(table: ProtocolTable, key: tuple[str, str], shots: int | None) -> float | None:
    means = [cells[key].mean for (m, k), cells in table.cells.items() if k == shots and key in cells]
    return max(means) if len(means) > 1 else None


def to_latex(table: ProtocolTable) -> str:
    """A booktabs ``tabular``; the best mean of each column (among the rows of one K) in bold."""
    keys = header_keys(table)
    lead = _lead(table)
    spec = "l" * len(lead) + "c" * len(keys)
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join([*lead, *(latex_escape(header_name(k)) for k in keys)]) + r" \\", r"\midrule"]
    for index, (method, shots) in enumerate(table.rows):
        if table.by_shots and index and shots != table.rows[index - 1][1]:
            lines.append(r"\midrule")  # one block per K
        cells = table.cells[(method, shots)]
        values = [latex_escape(v) for v in _lead_values(table, method, shots)]
        for key in keys:
            text = format_cell(cells.get(key), pm=r"\pm")
            best = _best(table, key, shots)
            if key in cells and best is not None and cells[key].mean == best:
                text = r"\mathbf{" + text + "}"
            values.append("-" if key not in cells else f"${text}$")
        lines.append(" & ".join(values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
