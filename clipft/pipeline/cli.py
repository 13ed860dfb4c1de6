"""Entry-point glue: run a pipeline, turn clipft errors into one clear line and exit code 1."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from clipft.pipeline.failures import report_failure

log = logging.getLogger("clipft")


def _guard(fn, cfg: DictConfig) -> Any:
    try:
        return fn(cfg)
    except BaseException as exc:
        # ClipftError, out of GPU memory, SIGTERM: one line with the fix and exit 1 (re-raised in a
        # multirun so the other jobs still run); anything else is a bug and keeps its trace
        report_failure(exc, cfg)
        raise


def train_entry(cfg: DictConfig) -> float | None:
    from clipft.pipeline.train import optimized_value, run_train

    metrics = _guard(run_train, cfg)
    return optimized_value(cfg, metrics)


def eval_entry(cfg: DictConfig) -> None:
    from clipft.pipeline.evaluate import run_eval

    _guard(run_eval, cfg)
