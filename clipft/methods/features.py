"""Frozen-feature methods (linear probe, Tip-Adapter, CLAP) share this: image embeddings of a split,
extracted once with the evaluation transform (no augmentation), in label order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from clipft.errors import DataError


@torch.no_grad()
def image_features(backbone: Any, loader: Iterable[Any], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` on the CPU: normalised image embeddings of every batch of ``loader``."""
    backbone.eval()
    feats, labels = [], []
    for batch in loader:
        inputs = batch[0].to(device)
        # a feature bank's rows are the raw embeddings already (clipft.callbacks.feature_bank)
        embedded = backbone.encode_image(inputs) if getattr(backbone, "reads_rows", False) else encode_or_pass(backbone, inputs)
        feats.append(embedded.float().cpu())
        labels.append(torch.as_tensor(batch[1]).cpu())
    if not feats:
        raise DataError("the feature loader yielded no images")
    return torch.cat(feats), torch.cat(labels)


def encode_or_pass(backbone: Any, inputs: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``backbone.encode_image(inputs)``, or ``inputs`` themselves when they are already embeddings (N x D rows of
    a feature bank, stored raw): the one place a frozen-tower method tells pixels from bank rows."""
    if inputs.dim() == 2:
        return torch.nn.functional.normalize(inputs, dim=-1) if normalize else inputs
    return backbone.encode_image(inputs, normalize=normalize)


def eval_loader(datamodule: Any, samples: Sequence[Any], batch_size: int = 128) -> torch.utils.data.DataLoader:
    """A split's images with the evaluation transform, in order (for one-off feature extraction)."""
    make = datamodule.make_dataset if getattr(datamodule, "feature_dataset", None) is not None else \
        getattr(datamodule, "image_dataset", datamodule.make_dataset)  # the transform applied even with augment_on_device
    return torch.utils.data.DataLoader(
        make(samples, train=False), batch_size=batch_size, shuffle=False,
        num_workers=getattr(datamodule, "num_workers", 0),
    )


def split_features(module: Any, batch_size: int = 128) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """Train and val features of the module's trainer's datamodule (val None when there is none)."""
    dm = module.trainer.datamodule
    if dm is None or not hasattr(dm, "train_samples"):
        raise DataError(f"{type(module).__name__} extracts features from a clipft datamodule's splits; fit it with datamodule=")
    train = image_features(module.backbone, eval_loader(dm, dm.train_samples, batch_size), module.device)
    return train, val_features(module, batch_size)


def val_features(module: Any, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Val features of the module's trainer's datamodule (None when it has no val split or no clipft datamodule)."""
    dm = module.trainer.datamodule
    if dm is None or not getattr(dm, "val_samples", None):
        return None
    return image_features(module.backbone, eval_loader(dm, dm.val_samples, batch_size), module.device)
