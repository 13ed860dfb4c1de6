"""Write the loggers' buffered rows to disk at every epoch start, so a killed run keeps its history.

Lightning's CSVLogger buffers rows and writes every ``flush_logs_every_n_steps`` (100) steps: a
run killed before that leaves no ``metrics.csv`` at all. Flushing when an epoch starts puts every
row of the finished epochs on disk, which is exactly the history up to the epoch-end
``last.ckpt``; a resumed run appends the rest, without duplicates.

Why not ``CSVLogger(flush_logs_every_n_steps=1)`` alone: it writes the rows of a half-finished
epoch too, which the resumed run (restarting from the epoch-end ``last.ckpt``) logs again, so the
history would hold those steps twice; a flush that follows the checkpoint's boundary is what keeps
it exact (``tests/test_resume.py`` checks the killed run's file holds whole epochs only).
"""

from __future__ import annotations

import lightning as L


class FlushLogs(L.Callback):
    """Call ``logger.save()`` on every logger at the start of each training epoch (after the first)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0:
            return
        for logger in trainer.loggers:
            logger.save()
