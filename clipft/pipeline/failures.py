"""Failures a user can fix, reported as one line with the knob to turn; bugs keep their trace.

The entry points route every exception through :func:`report_failure`:

* :class:`~clipft.errors.ClipftError` (bad config, data, checkpoint; a NaN loss) is printed as is;
* out of GPU memory becomes :class:`OutOfMemory`, naming the batch size and the knobs
  (``data.batch_size``, ``trainer.accumulate_grad_batches``, precision, gradient checkpointing);
* SIGTERM (Lightning's ``SIGTERMException``) becomes :class:`RunInterrupted`, saying where
  ``last.ckpt`` is and how to resume; the exit code is 143, as for a plain SIGTERM;
* anything else is a bug and propagates with its traceback.

In a Hydra multirun a fixable failure is re-raised instead of exiting, so Hydra records the job
as failed and runs the remaining jobs.
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.errors import ClipftError, ConfigError

log = logging.getLogger("clipft")

OOM_MARKERS = ("CUDA out of memory", "out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


class OutOfMemory(ConfigError):
    """The accelerator ran out of memory: the batch (or the model) is too big for it."""


class RunInterrupted(ClipftError):
    """The run was stopped by SIGTERM (pre-emption, ``scancel``, ``kill``); a checkpoint was saved."""

    exit_code = 143


def report_failure(exc: BaseException, cfg: DictConfig) -> None:
    """Print a fixable failure as one line and exit (or re-raise it in a multirun); return on bugs."""
    error = explain_failure(exc, cfg)
    if error is None:
        return
    log_to_files(f"{type(error).__name__}: {error}")  # train.log keeps it; the terminal gets it once, below
    print(f"clipft error: {error}", file=sys.stderr)
    if in_multirun() and not isinstance(error, RunInterrupted):
        raise error from (None if error is exc else exc)  # Hydra marks this job failed and goes on
    sys.exit(getattr(error, "exit_code", 1))


def log_to_files(message: str) -> None:
    """An ERROR record for the log files only (Hydra's ``train.log``): the console handler would print
    the error a second time, above the ``clipft error:`` line."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    seen: set[int] = set()
    current: logging.Logger | None = log
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, logging.FileHandler) and id(handler) not in seen and record.levelno >= handler.level:
                seen.add(id(handler))
                handler.handle(record)
        current = current.parent if current.propagate else None


def explain_failure(exc: BaseException, cfg: DictConfig) -> ClipftError | None:
    if isinstance(exc, ClipftError):
        return exc
    if is_host_out_of_memory(exc):
        return OutOfMemory(host_oom_message(cfg))
    if is_out_of_memory(exc):
        return OutOfMemory(oom_message(cfg))
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        from clipft.utils.io import disk_full

        where = Path(exc.filename).parent if exc.filename else Path(str(OmegaConf.select(cfg, "paths.output_dir", default=".")))
        return disk_full(where)
    if _is_sigterm(exc):
        folder = Path(str(OmegaConf.select(cfg, "paths.output_dir", default="."))) / "checkpoints"
        last, interrupted = folder / "last.ckpt", folder / "interrupted.ckpt"
        saved = f"saved {interrupted}" if interrupted.is_file() else "no checkpoint could be saved"
        resume = (
            f"rerun the same command with ckpt_path=last to resume exactly from the last completed epoch ({last})"
            if last.is_file()
            else "no epoch had finished, so rerun the same command to start over"
        )
        return RunInterrupted(
            f"interrupted by SIGTERM: {saved}; {resume}; or ckpt_path={interrupted} to continue mid-epoch"
        )
    return None


# torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes"
HOST_OOM_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "Cannot allocate memory")


def is_host_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in HOST_OOM_MARKERS)


def host_oom_message(cfg: DictConfig) -> str:
    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None)

    bs, workers = get("data.batch_size"), get("data.num_workers")
    knobs = [
        f"lower data.batch_size (e.g. data.batch_size={max(int(bs) // 2, 1)})" if isinstance(bs, int) else "lower data.batch_size",
        f"lower data.num_workers (each worker holds a copy of the dataset state; now {workers})",
    ]
    if get("data.cache"):
        knobs.append("or data.cache=false (the decoded-image cache is memory-mapped and counts as used memory)")
    return f"out of host (CPU) memory with data.batch_size={bs} and data.num_workers={workers}: " + "; ".join(knobs)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    if oom_type and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MARKERS)


def oom_message(cfg: DictConfig) -> str:
    def get(key: str, default: Any = None) -> Any:
        return OmegaConf.select(cfg, key, default=default)

    training = OmegaConf.select(cfg, "model", default=None) is not None
    bs_key = "data.batch_size" if training else "data.eval_batch_size"
    bs = get(bs_key) or get("data.batch_size")
    acc = int(get("trainer.accumulate_grad_batches", 1) or 1)
    knobs = [f"lower {bs_key} (e.g. {bs_key}={max(int(bs) // 2, 1)})" if isinstance(bs, int) else f"lower {bs_key}"]
    if training:
        effective = bs * acc if isinstance(bs, int) else None
        knobs.append(
            f"raise trainer.accumulate_grad_batches (e.g. ={acc * 2}) to keep the effective batch"
            + (f" of {effective}" if effective else "")
        )
        knobs.append("use trainer.precision=bf16-mixed, or model.clip.gradient_checkpointing=true")
    return (
        f"out of GPU memory with {bs_key}={bs}"
        + (f" and trainer.accumulate_grad_batches={acc}" if training else "")
        + f" (precision={get('trainer.precision')}): "
        + "; ".join(knobs)
    )


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - no Hydra context (library use, tests)
        return False


def _is_sigterm(exc: BaseException) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(exc, SIGTERMException)
