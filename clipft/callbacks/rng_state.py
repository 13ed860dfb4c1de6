"""Carry the random-number generators' state in checkpoints, so a resumed run draws what the
uninterrupted run would have drawn (shuffling order, augmentations, dropout, prompt choice).

Lightning restores weights, optimizer, schedulers and loop counters, but not the global RNGs:
without this callback a run resumed after epoch k shuffles epoch k+1 differently and ends with
different metrics. The state is stored as plain lists/tensors (``torch.load(weights_only=True)``
reads it) and re-applied when ``fit`` restores the checkpoint: after the resumed run's own set-up
(model init) has drawn from the generators and before the first training batches are drawn
(Lightning runs the sanity check with the generators isolated). A checkpoint written at the end
of epoch k was taken at exactly the state epoch k+1 starts from, so the resumed run continues
with the same draws.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn


def capture_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCheckpoint(L.Callback):
    """Save the global RNG state with every checkpoint; restore it when ``fit`` resumes from one."""

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # testing a checkpoint must not rewind the generators
            return
        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if state:
            restore_rng_state(state)
