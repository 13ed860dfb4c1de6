"""The results table's columns: run facts, then the headline metrics (clipft.evaluation.headline), then time and status."""

from __future__ import annotations

from clipft.evaluation.headline import percent_columns, table_columns

# column -> header shown in the markdown table (the headline metrics' columns are added by all_columns())
BASE_COLUMNS: dict[str, str] = {
    "method": "method",
    "model": "model",
    "data": "data",
    "split": "split",
    "image_size": "px",
    "n_train": "train",
    "n_val": "val",
    "n_test": "test",
    "epochs": "epochs",
    "val_acc": "val acc",
}
TAIL_COLUMNS: dict[str, str] = {"time_s": "time", "status": "status"}
# kept beside the shown columns in every row (the CSV holds them; --columns may ask for some)
EXTRA_COLUMNS = ("error", "overrides", "run_dir", "summary", "seed", "draw")
INTEGER_COLUMNS = ("rank", "image_size", "n_train", "n_val", "n_test", "epochs")
TEXT_HEADERS = ("method", "model", "data", "split", "status", "overrides", "swept", "run_dir", "seeds")
# the column shown by default when the listed runs differ in their overrides (a sweep's swept values)
SWEPT_COLUMN = "swept"


def all_columns() -> dict[str, str]:
    """Every table column -> its header: run facts, then the headline metrics (clipft.evaluation.headline)."""
    return {**BASE_COLUMNS, **table_columns("test"), **TAIL_COLUMNS}


def percent_column_names() -> tuple[str, ...]:
    return ("val_acc", *percent_columns("test"))


def metric_columns() -> list[str]:
    """The numeric columns a seed table averages."""
    return ["val_acc", *table_columns("test"), "epochs", "time_s"]
