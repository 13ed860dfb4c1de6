"""Example dataset (docs/extending.md): horizontal vs vertical stripes, written as PNGs on first use.

A dataset is one ImageClassificationDataModule subclass whose ``build_index`` lists the images;
splitting, duplicates, caching, transforms and loaders come from the base class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clipft.data.base import DatasetIndex, ImageClassificationDataModule, Sample

CLASSES = ["horizontal stripes", "vertical stripes"]


class StripesDataModule(ImageClassificationDataModule):
    def __init__(self, root: str, per_class: int = 12, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root, self.per_class = Path(root), int(per_class)

    def prepare_data(self) -> None:
        rng = np.random.default_rng(0)
        for label, name in enumerate(CLASSES):
            folder = self.root / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(self.per_class):
                stripes = np.indices((32, 32))[label] // int(rng.integers(2, 5)) % 2 * 200 + 25
                noisy = stripes[..., None] + rng.normal(0, 10, (32, 32, 3))
                Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")

    def build_index(self) -> DatasetIndex:
        self.prepare_data()
        pool = [Sample(str(p), label) for label, name in enumerate(CLASSES)
                for p in sorted((self.root / name.replace(" ", "_")).glob("*.png"))]
        return DatasetIndex(class_names=list(CLASSES), train_pool=pool)
