"""Hydra callback: after every job of a multirun, rank the sweep's runs into ``sweep_summary.{csv,md}``.

The summary is rewritten from the files on disk when each job starts and ends (not only at the
end), so a job that fails, or a sweep that is interrupted, still leaves a summary of every job so
far; failed jobs are listed (status ``failed`` and the error from the ``job_status.json`` that
:class:`clipft.pipeline.hydra_callbacks.JobStatusRecorder` writes) rather than dropped. Register
this callback after ``job_status`` so that record exists when the summary is written. It also names the
sweep's W&B group: unless ``WANDB_RUN_GROUP`` is already set, every job of one multirun logs
to the group ``<task>-<sweep folder>`` (see ``conf/logger/wandb.yaml``), each in its own run.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from clipft.evaluation.headline import summary_keys, table_columns
from clipft.results import collect, rank, swept_values, to_markdown, varying_overrides
from clipft.utils.io import atomic_write_text

log = logging.getLogger(__name__)

SUMMARY_NAME = "sweep_summary"
WANDB_GROUP_ENV = "WANDB_RUN_GROUP"
# summary keys the table already shows (as val acc, test acc ...)
def reported_metrics() -> tuple[str, ...]:
    return ("best_val_acc", *summary_keys("test"))


def summary_columns() -> list[str]:
    return ["rank", "overrides", "epochs", "val_acc", *table_columns("test"), "time_s", "status"]


class SweepSummary(Callback):
    """Write ``<sweep dir>/sweep_summary.csv`` and ``.md`` ranked by ``metric`` (default: ``optimized_metric``).

    Args:
        metric: a ``metrics.json`` summary key; ``null`` takes the run config's ``optimized_metric``.
        mode: ``max`` or ``min``.
        wandb_group: set ``WANDB_RUN_GROUP`` for the jobs of a multirun (when not set already).
    """

    def __init__(self, metric: str | None = None, mode: str = "max", wandb_group: bool = True) -> None:
        self.metric = metric
        self.mode = mode
        self.wandb_group = wandb_group
        self._user_group = os.environ.get(WANDB_GROUP_ENV) or None

    # ------------------------------------------------------------------ hydra hooks
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # the group is set per job (hydra.sweep.dir resolves only once a job's HydraConfig is set);
        # a group the user exported is left alone
        if config.hydra.get("mode") != RunMode.MULTIRUN:
            return
        if self.wandb_group and self._user_group is None:
            group = f"{config.get('task_name', 'sweep')}-{Path(str(config.hydra.sweep.dir)).name}"
            if os.environ.get(WANDB_GROUP_ENV) != group:
                log.info("W&B group of this sweep: %s", group)
            os.environ[WANDB_GROUP_ENV] = group
        # list this job as "incomplete" now: if the process dies, the summary still names it
        self.write(Path(str(config.hydra.sweep.dir)), self._metric(config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.get("mode") != RunMode.MULTIRUN:
            return
        finish_wandb_run()
        self.write(Path(str(config.hydra.sweep.dir)), self._metric(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.is_dir():
            path = self.write(sweep_dir, self._metric(config))
            log.info("sweep summary: %s", path)

    # ------------------------------------------------------------------ summary
    def _metric(self, config: DictConfig) -> str:
        return self.metric or config.get("optimized_metric") or "best_val_acc"

    def write(self, sweep_dir: Path, metric: str) -> Path:
        """Collect the sweep's job folders, rank them, write CSV + markdown; returns the .md path."""
        frame = collect([sweep_dir])  # failed jobs: from their job_status.json (JobStatusRecorder)
        frame = rank(frame, metric, self.mode)
        frame["job"] = [Path(d).name for d in frame["run_dir"]]
        swept = swept_values(list(frame["overrides"]))  # one CSV column per swept key, e.g. model.optimizer.lr
        for key, values in swept.items():
            frame[key] = values
        frame["overrides"] = varying_overrides(list(frame["overrides"]))
        csv_cols = ["rank", "job", *swept, "overrides", metric, *[c for c in summary_columns() if c not in ("rank", "overrides")], "error", "run_dir"]
        csv_cols = list(dict.fromkeys(csv_cols))
        atomic_write_text(sweep_dir / f"{SUMMARY_NAME}.csv", frame[csv_cols].to_csv(index=False))
        failed = frame[~frame["status"].isin(["ok", "debug"])]
        extra = [] if metric in reported_metrics() else [metric]
        text = [
            f"# Sweep summary: {sweep_dir.name}",
            "",
            f"{len(frame)} job(s), {len(frame) - len(failed)} finished; ranked by `{metric}` ({self.mode}).",
            "",
            to_markdown(frame, ["rank", "job", "overrides", *extra, *summary_columns()[2:]]),
        ]
        if len(failed):
            text += ["## Failed or unfinished jobs", ""]
            text += [f"- job {row.job} ({row.overrides}): {row.status}: {row.error or 'no metrics.json'}" for row in failed.itertuples()]
            text.append("")
        return atomic_write_text(sweep_dir / f"{SUMMARY_NAME}.md", "\n".join(text))


def finish_wandb_run() -> None:
    """Close this job's W&B run: jobs of a multirun share a process, and Lightning's WandbLogger
    would otherwise log the next job into the previous job's run."""
    wandb = sys.modules.get("wandb")  # never import wandb just to check
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
