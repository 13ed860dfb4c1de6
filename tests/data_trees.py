"""Tiny on-disk dataset layouts for the tests/test_data_*.py files (a few 8x8 PNGs each)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, seed: int, size: int = 8) -> Path:
    """A random RGB image fully determined by ``seed``; the format follows the suffix (.png, .ppm)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def make_traffic_signs(
    root: Path,
    per_class: tuple[int, ...] = (6, 6, 6, 1),
    names: tuple[str, ...] = ("Speed limit (40km/h)", "Go Left", "Speed limit (40km/h)", "Give Way"),
    copies: bool = True,
    test: bool = True,
) -> Path:
    """The 58-class layout in miniature: DATA with ``NNN_1_XXXX`` copies, labels.csv, a TEST folder.

    Class ``c`` has ``per_class[c]`` distinct photos (seed ``100*c + i``), each also saved as its
    ``_1_`` copy when ``copies``. TEST holds, per class, one copy of a DATA photo (a leak) and one
    new photo (seed ``100*c + 50``) plus its ``_1_`` copy.
    """
    data = root / "traffic_Data" / "DATA"
    rows = ["ClassId,Name"]
    for c, (count, name) in enumerate(zip(per_class, names)):
        rows.append(f"{c},{name}")
        for i in range(count):
            write_png(data / str(c) / f"{c:03d}_{i:04d}.png", seed=100 * c + i)
            if copies:
                shutil.copy(data / str(c) / f"{c:03d}_{i:04d}.png", data / str(c) / f"{c:03d}_1_{i:04d}.png")
        if test:
            write_png(root / "traffic_Data" / "TEST" / f"{c:03d}_0000_j.png", seed=100 * c)  # pixels of a DATA photo
            write_png(root / "traffic_Data" / "TEST" / f"{c:03d}_0050_j.png", seed=100 * c + 50)
            write_png(root / "traffic_Data" / "TEST" / f"{c:03d}_1_0050_1_j.png", seed=100 * c + 50)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def make_gtsrb(
    root: Path, per_class: int = 3, num_classes: int = 43, test_per_class: int = 1, per_track: int = 1
) -> Path:
    """torchvision's GTSRB layout: gtsrb/GTSRB/Training/000NN/TTTTT_FFFFF.ppm (``per_track`` frames a
    track), Final_Test/Images + GT-final_test.csv."""
    base = root / "gtsrb"
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    n = 0
    for c in range(num_classes):
        for i in range(per_class):
            path = base / "GTSRB" / "Training" / f"{c:05d}" / f"{i // per_track:05d}_{i % per_track:05d}.ppm"
            write_png(path, seed=1000 + 10 * c + i)
        for _ in range(test_per_class):
            name = f"{n:05d}.ppm"
            path = base / "GTSRB" / "Final_Test" / "Images" / name
            write_png(path, seed=50_000 + n)
            rows.append(f"{name};8;8;0;0;8;8;{c}")
            n += 1
    (base / "GT-final_test.csv").write_text("\r\n".join(rows) + "\r\n")
    return root
