"""Save the state of an interrupted run (SIGTERM from a scheduler, Ctrl+C) to ``interrupted.ckpt``.

Lightning turns SIGTERM into ``SIGTERMException`` after the current batch and Ctrl+C into
``KeyboardInterrupt``; both reach ``on_exception``, where this callback writes the current state
beside ``last.ckpt`` (atomically, through the trainer's CheckpointIO). ``last.ckpt`` is left as
the last *completed* epoch on purpose: a mid-epoch state cannot be resumed exactly (the data
order of the rest of the epoch is lost), an epoch end can. So ``ckpt_path=last`` resumes exactly,
and ``ckpt_path=<dir>/interrupted.ckpt`` trades exactness for the partial epoch's work.
Other exceptions (a NaN loss, a bug) save nothing: the last good checkpoint stays as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

INTERRUPTS = (SIGTERMException, KeyboardInterrupt)


class InterruptCheckpoint(L.Callback):
    """On SIGTERM / Ctrl+C during ``fit``, write ``<checkpoint dir>/<filename>``."""

    def __init__(self, filename: str = "interrupted.ckpt") -> None:
        self.filename = filename
        self.saved_path: str | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, INTERRUPTS) or trainer.state.fn != TrainerFn.FITTING:
            return
        path = checkpoint_dir(trainer) / self.filename
        trainer.save_checkpoint(path)
        self.saved_path = str(path)
        log.warning(
            "interrupted (%s) at epoch %d, step %d: saved %s; ckpt_path=last resumes exactly from the last "
            "completed epoch, ckpt_path=%s continues from here",
            type(exception).__name__, trainer.current_epoch, trainer.global_step, path, path,
        )


def checkpoint_dir(trainer: L.Trainer) -> Path:
    cb = trainer.checkpoint_callback
    if cb is not None and getattr(cb, "dirpath", None):
        return Path(cb.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"
