"""Hydra callback: every job records how it ended, so an unattended sweep's failures are not lost.

``<job dir>/job_status.json`` holds the status (``COMPLETED`` / ``FAILED``), the overrides, the
error (type, message and, for bugs, the traceback) and the return value. In a multirun each
failed job is also appended to ``<sweep dir>/failures.jsonl`` (one JSON line per job, safe with
parallel launchers), next to the ranked ``sweep_summary.md``. Hydra runs the remaining jobs and
exits non-zero at the end when any job failed.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from clipft.errors import ClipftError
from clipft.utils.io import append_json_line, atomic_write_json

log = logging.getLogger(__name__)

STATUS_NAME = "job_status.json"
FAILURES_NAME = "failures.jsonl"


class RunDirClaim(Callback):
    """Claim ``hydra.run.dir`` before Hydra writes into it.

    Hydra creates ``.hydra/config.yaml``, ``overrides.yaml`` and the job log in the run
    directory before the task starts. When two runs are pointed at one ``hydra.run.dir``, the
    second must be refused before that, or it would write its record (and its error) into the
    first run's directory. ``on_run_start`` runs before any of it; a refusal is one line, exit 1.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        from clipft.pipeline.run_dir import claim_run_dir

        try:
            run_dir = OmegaConf.select(config, "hydra.run.dir")
        except Exception as exc:  # noqa: BLE001 - unresolvable here: the task's own claim still runs
            log.debug("hydra.run.dir not resolvable before the job (%s)", exc)
            return
        if not run_dir:
            return
        task = str(OmegaConf.select(config, "task_name", default="train") or "train")
        try:
            claim_run_dir(Path(str(run_dir)), task)
        except ClipftError as exc:
            import sys

            print(f"clipft error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


class JobStatusRecorder(Callback):
    """Write ``job_status.json`` per job and ``failures.jsonl`` per sweep."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        try:
            record = job_record(config, job_return)
            atomic_write_json(Path(record["output_dir"]) / STATUS_NAME, record)
            if record["status"] == "FAILED" and config.hydra.get("mode") == RunMode.MULTIRUN:
                sweep_dir = Path(str(config.hydra.sweep.dir))
                append_json_line(sweep_dir / FAILURES_NAME, {k: v for k, v in record.items() if k != "traceback"})
                log.error("job %s failed (%s); the sweep goes on", record["job"], record["error"])
        except Exception as exc:  # noqa: BLE001 - recording must never break the sweep itself
            log.warning("could not record the job status: %s", exc)


def job_record(config: DictConfig, job_return: JobReturn) -> dict[str, Any]:
    runtime = config.hydra.runtime
    record: dict[str, Any] = {
        "job": config.hydra.job.get("num"),
        "status": job_return.status.name,
        "overrides": list(config.hydra.overrides.get("task") or []),
        "output_dir": str(runtime.output_dir),
        "time": time.time(),
        "error": None,
    }
    if job_return.status == JobStatus.FAILED:
        error = job_return._return_value  # the exception (.return_value would re-raise it)
        record["error"] = f"{type(error).__name__}: {error}"
        if not isinstance(error, ClipftError):  # a bug: keep where it happened
            record["traceback"] = "".join(traceback.format_exception(error))
    else:
        value = job_return._return_value
        record["return_value"] = value if isinstance(value, (int, float, str, type(None))) else repr(value)
    return record
