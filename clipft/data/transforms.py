"""Transform presets (torchvision.transforms.v2), picked by name from config.

Sign-safe by design: no preset flips horizontally, because a mirrored "keep left" is a
"keep right". Inputs may be PIL images or uint8 tensors (the decoded-image cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from clipft.errors import ConfigError


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def clip_eval(image_size: int, mean: Sequence[float], std: Sequence[float], **_: Any) -> v2.Compose:
    """Resize the short side, centre-crop, normalise: CLIP's evaluation preprocessing."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            *_finish(mean, std)[1:],
        ]
    )


def sign_train(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize_ratio: float = 256 / 224,
    rotation: float = 10.0,
    brightness: float = 0.3,
    contrast: float = 0.3,
    sharpness: float | None = None,
    blur: float | None = None,
    **_: Any,
) -> v2.Compose:
    """Resize to ``image_size * resize_ratio`` (256 for 224), random crop, small rotation, colour jitter."""
    ops: list[Any] = [
        v2.ToImage(),
        v2.Resize(int(round(image_size * resize_ratio)), antialias=True),
        v2.RandomCrop(image_size),
        v2.RandomRotation(rotation),
        v2.ColorJitter(brightness=brightness, contrast=contrast),
    ]
    if sharpness:
        ops.append(v2.RandomAdjustSharpness(sharpness_factor=sharpness, p=0.3))
    if blur:
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, blur))], p=0.3))
    return v2.Compose([*ops, *_finish(mean, std)[1:]])


def trivialaugment(image_size: int, mean: Sequence[float], std: Sequence[float], **_: Any) -> v2.Compose:
    """TrivialAugmentWide on a resized/cropped image (no flips)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(int(round(image_size * 256 / 224)), antialias=True),
            v2.RandomCrop(image_size),
            v2.TrivialAugmentWide(),
            *_finish(mean, std)[1:],
        ]
    )


PRESETS: dict[str, Callable[..., v2.Compose]] = {
    "clip_eval": clip_eval,
    "sign_train": sign_train,
    "trivialaugment": trivialaugment,
}


def build_transform(
    name: str, image_size: int, mean: Sequence[float], std: Sequence[float], **options: Any
) -> v2.Compose:
    if name not in PRESETS:
        raise ConfigError(f"transform preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    return PRESETS[name](image_size=int(image_size), mean=mean, std=std, **options)
