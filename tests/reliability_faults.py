"""Fault injection for the reliability tests: a callback added with Hydra overrides, e.g.
``+callbacks.fault._target_=reliability_faults.FaultAt +callbacks.fault.action=sigkill``.

It is imported by train.py subprocesses (``tests/`` is put on PYTHONPATH by the tests).
"""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class FaultAt(L.Callback):
    """At training batch ``batch`` of epoch ``epoch``: ``sigkill`` | ``sigterm`` | ``poison`` (NaN weights) | ``oom``."""

    def __init__(self, action: str, epoch: int = 0, batch: int = 0) -> None:
        self.action, self.epoch, self.batch = action, epoch, batch

    def _here(self, trainer: L.Trainer, batch_idx: int) -> bool:
        return trainer.current_epoch == self.epoch and batch_idx == self.batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._here(trainer, batch_idx):
            return
        if self.action == "poison":  # as if the last step had blown up: every weight is NaN now
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))
        elif self.action == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fault injected by a test)")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._here(trainer, batch_idx):
            return
        if self.action == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.action == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)


class KillInCheckpointWrite(L.Callback):
    """SIGKILL the process inside the next atomic write after epoch ``epoch``'s training ends (the
    checkpoint callbacks run after this one): the temp file is fully written but never renamed
    over its target (``clipft.utils.io``), so ``last.ckpt`` stays at epoch ``epoch - 1``."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        import clipft.utils.io as io

        def fsync_then_die(fd: int) -> None:
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)

        io.os = _OsWith(fsync=fsync_then_die)


class _OsWith:
    """``os`` with some functions replaced (only for the module that imports it)."""

    def __init__(self, **replaced) -> None:
        self._replaced = replaced

    def __getattr__(self, name):
        return self._replaced.get(name, getattr(os, name))
