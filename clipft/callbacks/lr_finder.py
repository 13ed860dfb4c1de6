"""Lightning's ``LearningRateFinder``, with the optimizer and its schedule rebuilt from the suggestion.

Lightning writes the suggested rate into the module's ``lr`` (``ClassificationModule.lr`` is
``optimizer.lr``) and into the live optimizer's param groups. But a scheduler keeps the
``base_lrs`` it was built with and puts the old rate back at its first step, and clipft's
schedules (warm-up + cosine / linear) are such schedulers. So, after the search, this callback has
the strategy call ``configure_optimizers`` again: the run then trains at the suggested rate with
its full schedule. Parts with their own rate (``learning_rates``) keep it.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import LearningRateFinder as _LightningLearningRateFinder


class LearningRateFinder(_LightningLearningRateFinder):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        before = getattr(pl_module, "lr", None)
        super().on_fit_start(trainer, pl_module)
        if getattr(pl_module, "lr", None) != before:
            trainer.strategy.setup_optimizers(trainer)
