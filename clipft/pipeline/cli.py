"""Entry-point glue: run a pipeline, turn clipft errors into one clear line and exit code 1."""

from __future__ import annotations

import logging
import os
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


# The configs ship inside the package (clipft/conf): an installed wheel finds them without the
# source checkout, and train.py / eval.py are shims over these two.
CONFIG_PATH = "pkg://clipft.conf"


# data.num_workers' default (conf/data/shared/common.yaml reads it): at most 4 loader processes, and no
# more than this machine gives the run, so a 2-core machine is not warned (by every loader) that 4 is too many
LOADER_WORKERS_ENV = "CLIPFT_NUM_WORKERS"
MAX_DEFAULT_WORKERS = 4


def default_loader_workers(limit: int = MAX_DEFAULT_WORKERS) -> int:
    """``min(limit, cores this process may use)``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(int(limit), cores))


def set_default_loader_workers() -> None:
    """Export :data:`LOADER_WORKERS_ENV` for the config (a value the user exported wins)."""
    os.environ.setdefault(LOADER_WORKERS_ENV, str(default_loader_workers()))


def train_main() -> None:
    """``clipft-train [experiment=NAME] [group=option] [key=value ...]``: the same overrides as ``train.py``."""
    import hydra

    set_default_loader_workers()
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")(train_entry)()


def eval_main() -> None:
    """``clipft-eval ckpt_path=RUN/checkpoints/best.ckpt [data=...]``: the same overrides as ``eval.py``."""
    import hydra

    set_default_loader_workers()
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")(eval_entry)()
