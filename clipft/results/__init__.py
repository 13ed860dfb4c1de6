"""The results table: every finished run's ``metrics.json`` collected into one comparable row.

``python -m clipft.results multirun/2026-... outputs/... [--out docs/table.md] [--csv t.csv]``
walks the given folders (or ``metrics.json`` files), reads each run's metrics and its Hydra
record (``.hydra/hydra.yaml``: which experiment, model and data it composed), and prints one
markdown table: method, data, split, epochs, val/test accuracy, macro-F1, ECE, time.
Runs that started but left no ``metrics.json`` (crashed, killed, still running) are listed
with their status instead of being silently dropped; ``debug=...`` / ``fast_dev_run`` runs are listed
with status ``debug`` (their numbers come from one batch or epoch). When the listed runs differ in
their overrides (a sweep), the ``swept`` column shows only what differs (all of them: ``--columns ...,overrides``). Imports no Hydra: it reads files only.

The package, one step per module (each imports only those above it):

* :mod:`~clipft.results.records` - a run folder's files as plain data (the only YAML reader);
* :mod:`~clipft.results.discover` - which folders under the given paths are runs;
* :mod:`~clipft.results.columns`, :mod:`~clipft.results.overrides` - the table's columns; override lines;
* :mod:`~clipft.results.rows` - one row per run, and the rows as a frame (:func:`collect`);
* :mod:`~clipft.results.aggregate` - pure functions of rows: the seed table, the ranking;
* :mod:`~clipft.results.render`, :mod:`~clipft.results.plots` - strings, markdown, the terminal; the shots figure;
* :mod:`~clipft.results.protocols`, :mod:`~clipft.results.protocol_render`, :mod:`~clipft.results.protocol_plots`,
  :mod:`~clipft.results.protocol_cli` - the benchmark protocols' paper tables (``python -m clipft.results --protocol P``);
* :mod:`~clipft.results.cli` - ``python -m clipft.results``.
"""

from __future__ import annotations

from clipft.results.aggregate import SEED_GROUP, aggregate_seeds, rank, shots_of
from clipft.results.cli import main
from clipft.results.columns import (
    BASE_COLUMNS,
    INTEGER_COLUMNS,
    SWEPT_COLUMN,
    TAIL_COLUMNS,
    TEXT_HEADERS,
    all_columns,
    percent_column_names,
)
from clipft.results.discover import find_run_dirs
from clipft.results.overrides import (
    BOOKKEEPING_KEYS,
    BOOKKEEPING_PREFIXES,
    SEED_KEYS,
    setting_of,
    swept_values,
    varying_overrides,
)
from clipft.results.plots import plot_shots
from clipft.results.records import (
    HYDRA_DIR,
    JOB_STATUS_FILE,
    METRICS_FILE,
    failure_record,
    hydra_choices,
    hydra_overrides,
    is_run_dir,
    read_json,
    read_yaml,
)
from clipft.results.render import default_columns, format_table, print_table, to_markdown
from clipft.results.rows import DEDUPE_NAMES, collect, describe_split, input_size, is_debug_run, rows_table, run_row

__all__ = [
    "BASE_COLUMNS",
    "BOOKKEEPING_KEYS",
    "BOOKKEEPING_PREFIXES",
    "DEDUPE_NAMES",
    "HYDRA_DIR",
    "INTEGER_COLUMNS",
    "JOB_STATUS_FILE",
    "METRICS_FILE",
    "SEED_GROUP",
    "SEED_KEYS",
    "SWEPT_COLUMN",
    "TAIL_COLUMNS",
    "TEXT_HEADERS",
    "aggregate_seeds",
    "all_columns",
    "collect",
    "default_columns",
    "describe_split",
    "failure_record",
    "find_run_dirs",
    "format_table",
    "hydra_choices",
    "hydra_overrides",
    "input_size",
    "is_debug_run",
    "is_run_dir",
    "main",
    "percent_column_names",
    "plot_shots",
    "print_table",
    "rank",
    "read_json",
    "read_yaml",
    "rows_table",
    "run_row",
    "setting_of",
    "shots_of",
    "swept_values",
    "to_markdown",
    "varying_overrides",
]
