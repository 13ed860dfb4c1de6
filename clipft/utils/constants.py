"""Normalisation constants and the preprocessing record every layer shares (as open_clip's ``constants.py``).

The one place the OpenAI-CLIP and ImageNet mean/std live: data (the datamodules' fallbacks and
transforms), models (each backbone's defaults) and evaluation (what a checkpoint that records
nothing is fed) import them from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# OpenAI CLIP's training set statistics (open_clip: OPENAI_DATASET_MEAN / OPENAI_DATASET_STD)
OPENAI_DATASET_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
# ImageNet (torchvision, timm: IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD)
IMAGENET_DEFAULT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# [-1, 1] pixels: SigLIP (timm: IMAGENET_INCEPTION_MEAN / IMAGENET_INCEPTION_STD)
INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_SIZE = 224


@dataclass(frozen=True, eq=False)
class Preprocessing(Mapping[str, Any]):
    """What an image tower expects: ``image_size`` (pixels, square) and the per-channel ``mean``/``std``.

    A read-only mapping too, with the plain-dict view of :meth:`as_dict` (``image_size`` an int,
    ``mean``/``std`` lists of floats), so ``build_transform(name, **preprocessing)``, ``dict(...)`` and
    the checkpoint/folder metadata written from it stay plain dicts, equal to what they were.
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN
    std: tuple[float, ...] = OPENAI_DATASET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))

    @classmethod
    def resolve(
        cls,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        *,
        default_size: int = DEFAULT_IMAGE_SIZE,
        default_mean: Sequence[float] = OPENAI_DATASET_MEAN,
        default_std: Sequence[float] = OPENAI_DATASET_STD,
    ) -> Preprocessing:
        """The first given (truthy) value of each field, else its default: ``image_size or default_size``, ..."""
        return cls(int(image_size or default_size), tuple(mean or default_mean), tuple(std or default_std))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, default: Preprocessing | None = None) -> Preprocessing:
        """A record from ``{image_size, mean, std}`` (e.g. a checkpoint's), missing keys from ``default``."""
        base = (default or cls()).as_dict()
        merged = {**base, **{k: v for k, v in dict(values or {}).items() if k in base}}
        return cls(merged["image_size"], merged["mean"], merged["std"])

    def as_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    def replace(self, **changes: Any) -> Preprocessing:
        return type(self)(**{**self.as_dict(), **changes})

    # ------------------------------------------------------------------ mapping view
    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("image_size", "mean", "std"))

    def __len__(self) -> int:
        return 3

    def __repr__(self) -> str:
        return f"Preprocessing(image_size={self.image_size}, mean={list(self.mean)}, std={list(self.std)})"


CLIP_PREPROCESSING = Preprocessing(DEFAULT_IMAGE_SIZE, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
IMAGENET_PREPROCESSING = Preprocessing(DEFAULT_IMAGE_SIZE, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
