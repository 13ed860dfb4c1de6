"""Helpers for the evaluation/report/CLI tests: a colour-square dataset a tiny CLIP learns in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 50, 220)}


def make_colour_dataset(root: Path, train_per_class: int = 16, test_per_class: int = 6, size: int = 32) -> Path:
    """``root/{train,test}/<colour>/*.png``: a noisy square of one colour on a grey background."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for name, rgb in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.full((size, size, 3), 128, dtype=np.float32)
                lo, hi = rng.integers(2, 8), rng.integers(size - 8, size - 2)
                img[lo:hi, lo:hi] = rgb
                img += rng.normal(0, 12, img.shape)
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def colour_data_overrides(data_root: Path) -> list[str]:
    return [
        "data=folder",
        f"data.root={data_root / 'train'}",
        f"data.test_root={data_root / 'test'}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=16",
        "data.val_fraction=0.25",
        "trainer.accelerator=cpu",
    ]


def colour_run_overrides(data_root: Path) -> list[str]:
    return [
        *colour_data_overrides(data_root),
        "+data.transform_options.rotation=0",
        "model.scheduler.warmup_steps=0",
        "trainer.max_epochs=3",
        "trainer.enable_model_summary=false",
        "~callbacks.rich_progress_bar",
        "~callbacks.early_stopping",
        # val/acc hits 1.0 after one epoch; keep the checkpoint that keeps improving
        "callbacks.model_checkpoint.monitor=val/loss",
        "callbacks.model_checkpoint.mode=min",
    ]
