"""An exponential moving average of the weights, on Lightning's ``WeightAveraging`` callback.

Lightning (>= 2.6) keeps the average in a ``torch.optim.swa_utils.AveragedModel``, runs validation
on it (so ``val/*``, early stopping and the ``best`` checkpoint judge the average), writes it as
every checkpoint's ``state_dict`` (the raw weights ride along as ``current_model_state``, so
``ckpt_path=last`` resumes exactly) and leaves it in the module when training ends. ``eval.py``
and ``load_module`` therefore need nothing special. What clipft adds is only the average's rule:
Lightning's ``EMAWeightAveraging`` uses a fixed decay, which in a short fine-tuning run keeps the
random or pretrained start in the average for ~1/(1-decay) steps; here the decay warms up as
TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` does, and integer buffers (BatchNorm's
``num_batches_tracked``) are copied rather than averaged.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging

from clipft.errors import ConfigError


def ema_average(decay: float, warmup: bool) -> Any:
    """``avg_fn(averaged, current, n_averaged)`` for ``AveragedModel``: ``avg <- d * avg + (1 - d) * current``,
    with ``d = min(decay, n / (n + 9))`` while warming up (n = updates so far; the first update copies)."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current.to(averaged.dtype)
        d = decay
        if warmup:
            n = float(num_averaged)
            d = min(decay, n / (n + 9.0))
        return averaged + (current.to(averaged.dtype) - averaged) * (1.0 - d)

    return average


class EMAWeights(WeightAveraging):
    """EMA of every parameter and buffer, updated every ``every_n_steps`` optimizer steps.

    Args:
        decay: the averaging factor per update (0.999 ~ an average over the last 1000 updates).
        warmup: use ``min(decay, (1 + k) / (10 + k))`` for the k-th update after the first, so early
            weights are forgotten quickly in short runs.
        every_n_steps: update every n optimizer steps.
        device: where the average lives (None: the module's device; ``cpu`` saves accelerator memory).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, every_n_steps: int = 1, device: str | None = None) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be in (0, 1), got {decay!r}")
        if int(every_n_steps) < 1:
            raise ConfigError(f"callbacks.ema.every_n_steps must be >= 1, got {every_n_steps!r}")
        super().__init__(device=device, use_buffers=True, avg_fn=ema_average(float(decay), bool(warmup)))
        self.every_n_steps = int(every_n_steps)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and (step_idx + 1) % self.every_n_steps == 0

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        # Lightning's hook puts the raw training weights back whenever its average model exists, also when
        # a finished fit goes on to trainer.test(ckpt_path=best): the test would then score the raw weights,
        # not the averaged ones every checkpoint holds (and eval.py scores). Only a resumed fit wants them.
        from lightning.pytorch.trainer.states import TrainerFn

        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    @property
    def num_updates(self) -> int:
        """How many times the average was updated (the first update copies the weights)."""
        model = self._average_model
        return int(model.n_averaged) if model is not None else 0

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed as the module's ``state_dict``."""
        if self._average_model is None:
            raise RuntimeError("EMAWeights has no average before fit starts")
        return {k.removeprefix("module."): v for k, v in self._average_model.state_dict().items() if k.startswith("module.")}
