"""Transform presets (torchvision.transforms.v2), picked by name from config.

Sign-safe by design: no preset flips horizontally, because a mirrored "keep left" is a
"keep right". Inputs may be PIL images or uint8 tensors (the decoded-image cache).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from clipft.errors import ConfigError

log = logging.getLogger(__name__)


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


class RandomDownscale(torch.nn.Module):
    """Shrink an image by a random factor and enlarge it back: the look of a smaller, softer photo.

    New photos are often taken from further away or with a worse camera than the training set
    (the 58-class TEST photos are a median 106 px wide against 143 px for DATA); training on
    re-enlarged low-resolution copies teaches the model that look without flipping anything.
    """

    def __init__(self, min_scale: float, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < min_scale <= 1.0 or not 0.0 <= p <= 1.0:
            raise ConfigError(
                f"data.transform_options.downscale={min_scale} / downscale_p={p}: "
                "downscale must be in (0, 1] and downscale_p in [0, 1]"
            )
        self.min_scale, self.p = float(min_scale), float(p)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or torch.rand(()) >= self.p:
            return image
        height, width = image.shape[-2:]
        scale = self.min_scale + (1.0 - self.min_scale) * float(torch.rand(()))
        small = [max(4, round(height * scale)), max(4, round(width * scale))]
        return v2.functional.resize(v2.functional.resize(image, small, antialias=True), [height, width], antialias=True)

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale}, p={self.p}"


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
    downscale: float | None = None,
    downscale_p: float = 0.5,
    **_: Any,
) -> v2.Compose:
    """Resize to ``image_size * resize_ratio`` (256 for 224), random crop, small rotation, colour jitter.

    ``downscale`` (smallest relative size, e.g. 0.3) adds :class:`RandomDownscale` with
    probability ``downscale_p``.
    """
    ops: list[Any] = [
        v2.ToImage(),
        v2.Resize(int(round(image_size * resize_ratio)), antialias=True),
        v2.RandomCrop(image_size),
    ]
    if downscale:
        ops.append(RandomDownscale(downscale, downscale_p))
    ops += [
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


def _named_options(preset: Callable[..., Any]) -> set[str]:
    params = inspect.signature(preset).parameters.values()
    return {
        p.name for p in params
        if p.kind is not p.VAR_KEYWORD and p.name not in ("image_size", "mean", "std")
    }


def build_transform(
    name: str, image_size: int, mean: Sequence[float], std: Sequence[float], **options: Any
) -> v2.Compose:
    if name not in PRESETS:
        raise ConfigError(f"transform preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
    accepted = _named_options(PRESETS[name])
    ignored = sorted(set(options) - accepted)
    if ignored:
        # a warning, not an error: experiments set options for their own preset, and swapping the
        # preset on the command line should still run
        log.warning(
            "data.transform_options %s are ignored by the %r preset (it takes: %s)",
            ignored, name, ", ".join(sorted(accepted)) or "none",
        )
    return PRESETS[name](image_size=int(image_size), mean=mean, std=std, **options)
