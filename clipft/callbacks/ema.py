"""An exponential moving average of a module's weights, used for validation, checkpoints and the final model.

Works with any LightningModule: it averages every floating tensor of ``state_dict()``
(parameters and BatchNorm statistics) and copies integer buffers. During validation the
module runs on the averaged weights, so ``val/*`` metrics, early stopping and the ``best``
checkpoint all judge the EMA model, and every checkpoint's ``state_dict`` holds the EMA
weights (``eval.py`` and ``load_module`` need nothing special). The raw training weights ride
along in the callback state so ``ckpt_path=last.ckpt`` resumes training where it stopped.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from clipft.errors import ConfigError


class EMAWeights(L.Callback):
    """Keep ``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    Args:
        decay: the averaging factor per update (0.999 ~ an average over the last 1000 steps).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` for the n-th update, so early, random
            weights are forgotten quickly in short runs.
        every_n_steps: update every n optimizer steps.
        save_training_weights: also store the raw weights in checkpoints (needed to resume).
    """

    def __init__(
        self, decay: float = 0.999, warmup: bool = True, every_n_steps: int = 1, save_training_weights: bool = True
    ) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be in (0, 1), got {decay!r}")
        if int(every_n_steps) < 1:
            raise ConfigError(f"callbacks.ema.every_n_steps must be >= 1, got {every_n_steps!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.every_n_steps = int(every_n_steps)
        self.save_training_weights = bool(save_training_weights)
        self.num_updates = 0
        self.ema: dict[str, torch.Tensor] | None = None
        self._backup: dict[str, torch.Tensor] | None = None
        self._last_step = -1
        self._resume: dict[str, Any] | None = None
        self._final = False  # after fit: the module keeps the average

    # ------------------------------------------------------------------ averaging
    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule) -> None:
        if self.ema is None:
            self.ema = _clone(pl_module.state_dict())
            return
        d = self.current_decay()
        for key, value in pl_module.state_dict().items():
            avg = self.ema[key]
            if avg.dtype.is_floating_point:
                avg.lerp_(value.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(value)
        self.num_updates += 1

    def _swap_in(self, pl_module: L.LightningModule) -> None:
        if self.ema is None or self._backup is not None:
            return
        self._backup = _clone(pl_module.state_dict())
        pl_module.load_state_dict(self.ema)

    def _swap_out(self, pl_module: L.LightningModule) -> None:
        if self._backup is None:
            return
        pl_module.load_state_dict(self._backup)
        self._backup = None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._final = False
        self._swap_out(pl_module)  # a second fit with this callback continues from the raw weights
        if self._resume is not None:  # the module holds the checkpoint's EMA weights
            self.ema = _clone(pl_module.state_dict())
            self.num_updates = int(self._resume.get("num_updates", 0))
            if self._resume.get("training_weights") is not None:
                pl_module.load_state_dict(self._resume["training_weights"])
            self._resume = None
        elif self.ema is None:
            self.ema = _clone(pl_module.state_dict())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step  # counts optimizer steps, not micro-batches
        if step != self._last_step and step % self.every_n_steps == 0:
            self._last_step = step
            self.update(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._swap_in(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._final:
            self._swap_out(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Training is over: the module keeps the averaged weights (the raw ones stay in the callback state)."""
        self._swap_in(pl_module)
        self._final = True

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"num_updates": self.num_updates, "decay": self.decay}
        if self.save_training_weights:
            state["training_weights"] = self._backup if self._backup is not None else self._live
        return state

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint["state_dict"] = {k: v.detach().clone() for k, v in self.ema.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module = pl_module

    @property
    def _live(self) -> dict[str, torch.Tensor] | None:
        module = getattr(self, "_module", None)
        return _clone(module.state_dict()) if module is not None else None


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
