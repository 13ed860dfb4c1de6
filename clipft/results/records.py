"""What one run folder holds, read as plain data: ``metrics.json``, Hydra's record, the job's status.

The only YAML reader of the results package (``yaml.safe_load``: the configs are shown, never built).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from clipft.errors import DataError

METRICS_FILE = "metrics.json"
HYDRA_DIR = ".hydra"
# how a Hydra job ended, written by clipft.pipeline.hydra_callbacks.JobStatusRecorder
JOB_STATUS_FILE = "job_status.json"


def is_run_dir(path: Path) -> bool:
    """A run directory holds a ``metrics.json`` or Hydra's ``.hydra`` record."""
    return (path / METRICS_FILE).is_file() or (path / HYDRA_DIR).is_dir()


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(path)!r} cannot be read as JSON: {exc}") from exc


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def hydra_choices(run_dir: Path) -> dict[str, Any]:
    """Config-group choices the run composed (``experiment``, ``model``, ``data`` ...), if recorded."""
    record = read_yaml(run_dir / HYDRA_DIR / "hydra.yaml") or {}
    return dict(((record.get("hydra") or {}).get("runtime") or {}).get("choices") or {})


def hydra_overrides(run_dir: Path) -> list[str]:
    """Command-line overrides of the run (for a sweep job: the swept values)."""
    return [str(o) for o in (read_yaml(run_dir / HYDRA_DIR / "overrides.yaml") or [])]


def run_config(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's composed config: the copy in ``metrics.json``, else ``config.yaml``, else Hydra's."""
    return metrics.get("config") or read_yaml(run_dir / "config.yaml") or read_yaml(run_dir / HYDRA_DIR / "config.yaml") or {}


def failure_record(run_dir: Path) -> dict[str, Any] | None:
    """The job's status record if it says the job failed (``status: FAILED`` and the error)."""
    path = run_dir / JOB_STATUS_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except DataError:
        return None
    return record if str(record.get("status", "")).upper() == "FAILED" else None
