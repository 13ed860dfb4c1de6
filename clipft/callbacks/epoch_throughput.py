"""Log each training epoch's wall time and images per second (``train/epoch_time_s``, ``train/images_per_s``).

Lightning's ``ThroughputMonitor`` needs a ``batch_size_fn`` callable, which a YAML config cannot
name, and logs per step; this callback counts the images of each batch (its first tensor's
length: no device sync) and logs once per epoch, so the figure lands in ``metrics.json``'s history
and the CSV log beside the losses. Time is wall time from the first batch to the epoch's end, so
the number says what an epoch of real loading + training delivers (benchmarks/e2e_epoch.py
compares it with the bare step's throughput).
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class EpochThroughput(L.Callback):
    def __init__(self) -> None:
        self._start: float | None = None
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._images = None, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        self._images += len(first) if hasattr(first, "__len__") else 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is None or not self._images:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # once per epoch: the time must include queued work
        seconds = time.perf_counter() - self._start
        images = self._images * trainer.world_size
        pl_module.log("train/epoch_time_s", seconds, rank_zero_only=True)
        pl_module.log("train/images_per_s", images / max(seconds, 1e-9), rank_zero_only=True)
