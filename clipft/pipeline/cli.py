"""Entry-point glue: run a pipeline, turn clipft errors into one clear line and exit code 1."""

from __future__ import annotations

import logging
import sys
from typing import Any

from omegaconf import DictConfig

from clipft.errors import ClipftError

log = logging.getLogger("clipft")


def _guard(fn, cfg: DictConfig) -> Any:
    try:
        return fn(cfg)
    except ClipftError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        print(f"clipft error: {exc}", file=sys.stderr)
        sys.exit(1)


def train_entry(cfg: DictConfig) -> float | None:
    from clipft.pipeline.train import optimized_value, run_train

    metrics = _guard(run_train, cfg)
    return optimized_value(cfg, metrics)


def eval_entry(cfg: DictConfig) -> None:
    from clipft.pipeline.evaluate import run_eval

    _guard(run_eval, cfg)
