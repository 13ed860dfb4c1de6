"""Two-stage fine-tuning inside one run: train the head on a frozen body, then unfreeze its top.

The module says what its body is by defining ``finetuning_blocks()`` (stages ordered from input
to output). For ``head_epochs`` epochs every block is frozen, so only the head learns; from then
on the last ``unfreeze_blocks`` blocks (``"all"``: every block) train too. BatchNorm layers in
frozen blocks stay in eval mode, so their running statistics are neither used from the batch
nor overwritten.

Unlike Lightning's ``BaseFinetuning``, which adds a parameter group to the optimizer at the
switch (LR schedulers built at the start, such as OneCycleLR, do not follow a group added
later), the module's optimizer holds every group from the first step with its own LR (head and
body); freezing only turns gradients off. The stage follows from the epoch alone, so a resumed
run lands in the right stage.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from clipft.errors import ConfigError


def _count_blocks(unfreeze_blocks: Any) -> int | None:
    """``None`` means every block."""
    if unfreeze_blocks in (None, "all", -1):
        return None
    if isinstance(unfreeze_blocks, bool) or not isinstance(unfreeze_blocks, int) or unfreeze_blocks < 0:
        raise ConfigError(f"unfreeze_blocks must be 'all' or an integer >= 0, got {unfreeze_blocks!r}")
    return unfreeze_blocks


class TwoStageFinetuning(L.Callback):
    """Head warm-up on a frozen body for ``head_epochs``, then unfreeze the last ``unfreeze_blocks`` blocks.

    Args:
        head_epochs: epochs with the whole body frozen (0: fine-tune from the first epoch).
        unfreeze_blocks: how many blocks, counted from the output, train in stage 2;
            ``"all"`` for every block, 0 for a linear probe throughout.
    """

    def __init__(self, head_epochs: int = 2, unfreeze_blocks: int | str = "all") -> None:
        if isinstance(head_epochs, bool) or not isinstance(head_epochs, int) or head_epochs < 0:
            raise ConfigError(f"head_epochs must be an integer >= 0, got {head_epochs!r}")
        self.head_epochs = head_epochs
        self.unfreeze_blocks = _count_blocks(unfreeze_blocks)
        self.stage: str | None = None
        self._frozen_bn: list[nn.Module] = []

    # ------------------------------------------------------------------ what is trainable when
    def stage_at(self, epoch: int) -> str:
        return "head" if epoch < self.head_epochs else "finetune"

    def trainable_blocks(self, blocks: list[nn.Module], epoch: int) -> list[nn.Module]:
        if self.stage_at(epoch) == "head":
            return []
        if self.unfreeze_blocks is None:
            return list(blocks)
        return list(blocks[len(blocks) - self.unfreeze_blocks :]) if self.unfreeze_blocks else []

    @staticmethod
    def blocks_of(pl_module: L.LightningModule) -> list[nn.Module]:
        if not hasattr(pl_module, "finetuning_blocks"):
            raise ConfigError(
                f"{type(pl_module).__name__} has no finetuning_blocks() method, so TwoStageFinetuning cannot "
                "tell its body from its head; remove the callback or use a module that defines it"
            )
        return list(pl_module.finetuning_blocks())

    def apply(self, pl_module: L.LightningModule, epoch: int) -> None:
        """Set requires_grad per block for ``epoch`` and remember the BatchNorms to keep in eval."""
        blocks = self.blocks_of(pl_module)
        trainable = {id(b) for b in self.trainable_blocks(blocks, epoch)}
        self._frozen_bn = []
        for block in blocks:
            train = id(block) in trainable
            block.requires_grad_(train)
            if train:
                block.train(pl_module.training)  # BatchNorms kept in eval during stage 1 learn again
            else:
                self._frozen_bn.extend(m for m in block.modules() if isinstance(m, _BatchNorm))
        self._keep_frozen_bn_eval()
        stage = self.stage_at(epoch)
        if stage != self.stage:
            n = len(trainable)
            rank_zero_info(
                f"TwoStageFinetuning: epoch {epoch}: stage '{stage}', {n}/{len(blocks)} body blocks trainable"
            )
        self.stage = stage

    def _keep_frozen_bn_eval(self) -> None:
        for bn in self._frozen_bn:
            bn.eval()

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.apply(pl_module, trainer.current_epoch)
        pl_module.log("train/finetune_stage", float(self.stage == "finetune"), on_step=False, on_epoch=True)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        # Lightning puts the module back in train mode after each validation run.
        self._keep_frozen_bn_eval()
