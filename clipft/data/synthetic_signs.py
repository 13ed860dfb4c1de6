"""A procedurally generated traffic-sign dataset: the embedded default that needs no download.

Ten classes of coloured circles, triangles, octagons, squares and diamonds with glyphs and
digits, drawn with PIL at random scale, offset, rotation, lighting and background, fully
determined by the seed. Written once under ``data_dir`` as ``train/<class>/*.png`` and
``test/<class>/*.png``; a manifest records the parameters so a change regenerates it.
Two classes are mirror images ("keep left" / "keep right"), which punishes horizontal flips.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from clipft.data.folder import FolderDataModule

RED, WHITE, BLUE, YELLOW, BLACK = (200, 30, 35), (245, 245, 245), (25, 70, 170), (245, 200, 20), (20, 20, 20)

# name -> (shape, fill, border, glyph)
SIGN_CLASSES: dict[str, tuple[str, tuple, tuple | None, str]] = {
    "stop": ("octagon", RED, WHITE, "STOP"),
    "yield": ("triangle_down", WHITE, RED, ""),
    "speed limit 30": ("circle", WHITE, RED, "30"),
    "speed limit 50": ("circle", WHITE, RED, "50"),
    "no entry": ("circle", RED, None, "bar"),
    "keep right": ("circle", BLUE, WHITE, "arrow_right"),
    "keep left": ("circle", BLUE, WHITE, "arrow_left"),
    "general caution": ("triangle_up", WHITE, RED, "!"),
    "parking": ("square", BLUE, WHITE, "P"),
    "priority road": ("diamond", YELLOW, WHITE, ""),
}
GENERATOR_VERSION = 1


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "octagon":
        return [(cx + r * math.cos(math.pi / 8 + k * math.pi / 4), cy + r * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]
    if shape == "triangle_up":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.7), (cx - r * 0.95, cy + r * 0.7)]
    if shape == "triangle_down":
        return [(cx, cy + r), (cx + r * 0.95, cy - r * 0.7), (cx - r * 0.95, cy - r * 0.7)]
    if shape == "square":
        return [(cx - r * 0.85, cy - r * 0.85), (cx + r * 0.85, cy - r * 0.85), (cx + r * 0.85, cy + r * 0.85), (cx - r * 0.85, cy + r * 0.85)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(shape)


def _shrink(points: list[tuple[float, float]], cx: float, cy: float, k: float) -> list[tuple[float, float]]:
    return [(cx + (x - cx) * k, cy + (y - cy) * k) for x, y in points]


def render_sign(name: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """One randomised sign image of class ``name``."""
    shape, fill, border, glyph = SIGN_CLASSES[name]
    canvas = size * 2  # draw at 2x, then downsample for anti-aliasing
    bg = tuple(int(v) for v in rng.integers(40, 200, size=3))
    img = Image.new("RGB", (canvas, canvas), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):  # background clutter
        x0, y0 = rng.integers(0, canvas, size=2)
        col = tuple(int(v) for v in rng.integers(0, 255, size=3))
        draw.rectangle([int(x0), int(y0), int(x0 + rng.integers(5, 30)), int(y0 + rng.integers(5, 30))], fill=col)
    r = canvas * float(rng.uniform(0.30, 0.44))
    cx = canvas / 2 + float(rng.uniform(-0.08, 0.08)) * canvas
    cy = canvas / 2 + float(rng.uniform(-0.08, 0.08)) * canvas
    outer = border or fill
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=outer)
        ri = r * 0.78 if border else r
        draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=fill)
    else:
        pts = _polygon(shape, cx, cy, r)
        draw.polygon(pts, fill=outer)
        if border:
            draw.polygon(_shrink(pts, cx, cy, 0.72 if "triangle" in shape else 0.8), fill=fill)
    ink = BLACK if fill in (WHITE, YELLOW) else WHITE
    if glyph == "bar":
        draw.rectangle([cx - r * 0.65, cy - r * 0.17, cx + r * 0.65, cy + r * 0.17], fill=WHITE)
    elif glyph in ("arrow_right", "arrow_left"):
        s = 1 if glyph == "arrow_right" else -1
        draw.line([(cx - s * r * 0.5, cy - s * 0.0 + r * 0.35), (cx + s * r * 0.25, cy - r * 0.35)], fill=WHITE, width=max(2, int(r * 0.16)))
        tip = (cx + s * r * 0.45, cy - r * 0.55)
        draw.polygon([tip, (cx + s * r * 0.05, cy - r * 0.5), (cx + s * r * 0.35, cy - r * 0.15)], fill=WHITE)
    elif glyph:
        font = ImageFont.load_default(size=max(8, int(r * (0.55 if len(glyph) > 2 else 0.8))))
        box = draw.textbbox((0, 0), glyph, font=font)
        w, h = box[2] - box[0], box[3] - box[1]
        draw.text((cx - w / 2 - box[0], cy - h / 2 - box[1]), glyph, fill=ink, font=font)
    img = img.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR, fillcolor=bg)
    img = img.resize((size, size), Image.LANCZOS)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    arr = np.asarray(img, dtype=np.float32) * float(rng.uniform(0.6, 1.25))
    arr += rng.normal(0, float(rng.uniform(2, 10)), arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def generate_synthetic_signs(
    root: str | Path,
    train_per_class: int = 100,
    test_per_class: int = 30,
    image_size: int = 48,
    seed: int = 0,
    num_classes: int | None = None,
) -> Path:
    """Write the dataset under ``root`` unless a manifest with the same parameters is there."""
    root = Path(root)
    names = list(SIGN_CLASSES)[: num_classes or len(SIGN_CLASSES)]
    params: dict[str, Any] = {
        "version": GENERATOR_VERSION,
        "classes": names,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "image_size": image_size,
        "seed": seed,
    }
    if _manifest_matches(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root.with_name(root.name + ".lock")):
        if _manifest_matches(root, params):  # another process generated it while we waited
            return root
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for split, per_class, offset in (("train", train_per_class, 0), ("test", test_per_class, 1_000_003)):
            for label, name in enumerate(names):
                rng = np.random.default_rng([seed, offset, label])
                folder = tmp / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    render_sign(name, rng, image_size).save(folder / f"{i:04d}.png")
        (tmp / "manifest.json").write_text(json.dumps(params, indent=2))
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)  # a half-written dataset is never mistaken for a finished one
    return root


def _manifest_matches(root: Path, params: dict[str, Any]) -> bool:
    try:
        return json.loads((root / "manifest.json").read_text()) == params
    except (OSError, json.JSONDecodeError):
        return False


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    """Serialise generation across processes (two runs started together share one dataset)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class SyntheticSignsDataModule(FolderDataModule):
    """The synthetic sign set, generated into ``root`` on first use (deterministic from ``generator_seed``)."""

    def __init__(
        self,
        root: str,
        train_per_class: int = 100,
        test_per_class: int = 30,
        source_image_size: int = 48,
        generator_seed: int = 0,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=str(Path(root) / "train"), test_root=str(Path(root) / "test"), **kwargs)
        self.dataset_root = str(root)
        self.generator = {
            "train_per_class": train_per_class,
            "test_per_class": test_per_class,
            "image_size": source_image_size,
            "seed": generator_seed,
            "num_classes": num_classes,
        }

    def prepare_data(self) -> None:
        generate_synthetic_signs(self.dataset_root, **self.generator)

    def build_index(self):
        self.prepare_data()
        return super().build_index()
