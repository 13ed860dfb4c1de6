"""CNNTransfer: a torchvision CNN with a new classifier head, fine-tuned in two stages.

The baseline every CLIP result is compared against. The head trains alone on the frozen body
for ``finetuning.head_epochs`` epochs at ``optimizer.lr``, then the last
``finetuning.unfreeze_blocks`` body blocks join at ``backbone_lr`` (see
:class:`clipft.callbacks.TwoStageFinetuning`, which this module attaches itself). MixUp/CutMix,
label smoothing and the LR schedule come from config; metrics, checkpoints and ``eval.py``
support are inherited from :class:`ClassificationModule`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from clipft.callbacks.finetuning import TwoStageFinetuning
from clipft.errors import ConfigError
from clipft.methods.batch_mixing import BatchMixer
from clipft.methods.classification import ClassificationModule
from clipft.models.contract import ImageBackbone
from clipft.utils.instantiate import instantiate

DEFAULT_BACKBONE = {"_target_": "clipft.models.build_torchvision_backbone", "name": "mobilenet_v3_small", "pretrained": False}


class CNNTransfer(ClassificationModule):
    """Transfer learning with a torchvision backbone.

    Args:
        backbone: ``{_target_: clipft.models.build_torchvision_backbone, name, pretrained}``;
            anything returning a module with ``feature_dim`` and ``blocks()`` works.
        backbone_lr: LR of the body once unfrozen (default ``lr / 10``).
        finetuning: ``{head_epochs, unfreeze_blocks}``; ``null`` fine-tunes everything from the start.
        mixing: ``{mixup_alpha, cutmix_alpha, prob, switch_prob}`` for :class:`BatchMixer`.
        head_dropout: dropout before the new Linear head.
        image_size: input size the datamodule resizes to (data.image_size wins if set).
        channels_last: run the CNN in channels-last memory format (faster on recent GPUs/CPUs).
        Every other argument: :class:`~clipft.methods.classification.ClassificationModule` (``optimizer.lr`` is the head's).
    """

    passes_on = ("class_names", "optimizer", "scheduler", "label_smoothing")

    def __init__(
        self,
        *args: Any,
        backbone: dict[str, Any] | None = None,
        backbone_lr: float | None = None,
        finetuning: dict[str, Any] | None = None,
        mixing: dict[str, Any] | None = None,
        head_dropout: float = 0.2,
        image_size: int = 224,
        channels_last: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)  # checks every argument (check_arguments)
        self.backbone = instantiate(backbone or DEFAULT_BACKBONE, config_path="backbone")
        if not isinstance(self.backbone, ImageBackbone):
            raise ConfigError(
                f"backbone must build a clipft.models.contract.ImageBackbone (feature_dim, blocks(), preprocessing), "
                f"got {type(self.backbone).__name__}"
            )
        self.head = nn.Sequential(nn.Dropout(float(head_dropout)), nn.Linear(self.backbone.feature_dim, self.num_classes))
        self.backbone_lr = float(backbone_lr) if backbone_lr is not None else None
        self.finetuning = dict(finetuning) if finetuning else None
        self.mixer = BatchMixer(self.num_classes, **dict(mixing or {}))
        self.image_size = image_size
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self._stage_callback = TwoStageFinetuning(**self.finetuning) if self.finetuning else None

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """``head_dropout`` in [0, 1), ``backbone_lr`` > 0 or null, ``image_size`` an integer >= 16; then the base's."""
        super().check_arguments(arguments)
        head_dropout, backbone_lr = arguments.get("head_dropout", 0.0), arguments.get("backbone_lr")
        image_size = arguments.get("image_size", 224)
        if not isinstance(head_dropout, (int, float)) or isinstance(head_dropout, bool) or not 0.0 <= head_dropout < 1.0:
            raise ConfigError(f"head_dropout={head_dropout!r} is not allowed: expected a number in [0, 1)")
        if backbone_lr is not None and (isinstance(backbone_lr, bool) or not isinstance(backbone_lr, (int, float)) or not backbone_lr > 0):
            raise ConfigError(f"backbone_lr={backbone_lr!r} is not allowed: expected a positive number or null")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
            raise ConfigError(f"image_size={image_size!r} is not allowed: expected an integer >= 16 (pixels)")

    # ------------------------------------------------------------------ structure
    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**self.backbone.preprocessing, "image_size": self.image_size}

    def finetuning_blocks(self) -> list[nn.Module]:
        return self.backbone.blocks()

    def configure_callbacks(self) -> list[Any]:
        return [self._stage_callback] if self._stage_callback is not None else []

    # ------------------------------------------------------------------ forward / steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(images))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        images, targets, mixed = self.mixer(images, labels)
        logits = self(images)
        loss = self.classification_loss(logits, targets)
        bs = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        if not mixed:
            acc = (logits.argmax(dim=-1) == labels).float().mean()
            self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The weights are in the state dict: reloading must not need the pretrained file or a download."""
        super().on_save_checkpoint(checkpoint)
        backbone = checkpoint.get("hyper_parameters", {}).get("backbone")
        if isinstance(backbone, dict) and "pretrained" in backbone:
            backbone["pretrained"] = False

    # ------------------------------------------------------------------ optimisation
    def named_parameter_groups(self) -> dict[str, Iterable[tuple[str, nn.Parameter]]]:
        return {"head": self.head.named_parameters(), "backbone": self.backbone.named_parameters()}

    def part_learning_rates(self) -> dict[str, float | None]:
        head_lr = float(self.optimizer_config["lr"])
        return {"head": head_lr, "backbone": self.backbone_lr or head_lr / 10}
