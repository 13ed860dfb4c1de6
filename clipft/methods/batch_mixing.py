"""MixUp / CutMix on a training batch (torchvision.transforms.v2), returning soft labels.

``BatchMixer(mixup_alpha, cutmix_alpha, prob, switch_prob)`` mixes a batch with probability
``prob``; when both alphas are > 0 it picks CutMix with probability ``switch_prob`` and MixUp
otherwise. Labels come back as class-probability rows (they sum to 1), which
``F.cross_entropy`` accepts directly, label smoothing included.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2

from clipft.errors import ConfigError


class BatchMixer(nn.Module):
    """``(images, int labels) -> (images, soft labels)``, or the inputs unchanged when not mixing.

    Args:
        num_classes: width of the soft labels.
        mixup_alpha / cutmix_alpha: Beta(alpha, alpha) parameters; 0 turns that method off.
        prob: chance that a batch is mixed at all.
        switch_prob: chance of CutMix rather than MixUp when both are on.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        super().__init__()
        for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if float(value) < 0:
                raise ConfigError(f"model.mixing.{key} must be >= 0 (0 disables it), got {value!r}")
        for key, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"model.mixing.{key} must be in [0, 1], got {value!r}")
        self.num_classes = int(num_classes)
        self.prob = float(prob)
        methods, weights = [], []
        if mixup_alpha > 0:
            methods.append(v2.MixUp(alpha=float(mixup_alpha), num_classes=self.num_classes))
            weights.append(1.0 - float(switch_prob) if cutmix_alpha > 0 else 1.0)
        if cutmix_alpha > 0:
            methods.append(v2.CutMix(alpha=float(cutmix_alpha), num_classes=self.num_classes))
            weights.append(float(switch_prob) if mixup_alpha > 0 else 1.0)
        self.transform = v2.RandomChoice(methods, p=weights) if len(methods) > 1 else (methods[0] if methods else None)

    @property
    def enabled(self) -> bool:
        return self.transform is not None and self.prob > 0

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Returns ``(images, labels, mixed)``; labels are soft only when ``mixed``."""
        if not self.enabled or len(labels) < 2 or torch.rand(()).item() >= self.prob:
            return images, labels, False
        mixed_images, soft = self.transform(images, labels)
        return mixed_images, soft, True
