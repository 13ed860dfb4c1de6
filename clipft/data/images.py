"""Image decoding with clear errors: every image becomes an RGB PIL image or a DataError naming the file."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from clipft.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def load_rgb(path: str | os.PathLike, data: bytes | None = None) -> Image.Image:
    """Decode fully (so truncation surfaces here) and convert any mode (L, LA, P, RGBA, I;16) to RGB.

    ``data``: the file's bytes, already read (a streamed item); ``path`` then only names it in errors.
    """
    path = Path(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            _check_pixel_count(img)
            img.load()
            return to_rgb(img)
    except FileNotFoundError as exc:
        raise DataError(f"image file {str(path)!r} does not exist (was the dataset moved or deleted?)") from exc
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt bytes (EOFError, struct.error, ...)
        raise DataError(
            f"cannot decode image {str(path)!r} ({type(exc).__name__}: {exc}); delete or replace it, "
            "or leave bad images out: data.on_bad_image=skip (training/eval), --on-bad-image skip (clipft-predict/ask)"
        ) from exc


def _check_pixel_count(img: Image.Image) -> None:
    """Refuse a header announcing more than ``PIL.Image.MAX_IMAGE_PIXELS`` before decoding allocates it."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        raise Image.DecompressionBombError(
            f"{img.width}x{img.height} pixels is more than PIL.Image.MAX_IMAGE_PIXELS={limit} (raise it if the image is real)"
        )


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits before the RGB conversion (PIL would clip).
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() or 1.0
        arr = (arr / (65535.0 if peak > 255 else 255.0) * 255.0).clip(0, 255).astype("uint8")
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
