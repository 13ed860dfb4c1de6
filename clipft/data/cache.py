"""The decoded-image cache: every image resized once and stored as one memory-mapped uint8 array.

PNG decoding dominates an epoch on small sign images. With ``data.cache=true`` each image is
decoded once, its short side resized to ``size`` and centre-cropped to ``size x size`` (signs
are near-square crops), and stored as row ``i`` of an ``(N, 3, size, size)`` uint8 ``.npy``
file under ``data.cache_dir``. Augmentation then runs on uint8 tensors with
torchvision.transforms.v2. The manifest beside the array records a key built from every source
file's path, byte size and mtime plus ``size``: a changed, added or removed file rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from clipft.data.images import load_rgb
from clipft.data.paths import canonical_path
from clipft.errors import DataError
from clipft.utils.io import atomic_write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1
FREE_SPACE_MARGIN = 1 << 30  # leave 1 GiB on the disk for checkpoints and logs


def cache_bytes(num_images: int, size: int) -> int:
    """What the array holds: N x 3 x size x size uint8 (the .npy header aside)."""
    return int(num_images) * 3 * int(size) * int(size)


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse a cache that would not fit, before writing a byte of it."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if needed + FREE_SPACE_MARGIN > free:
        raise DataError(
            f"data.cache=true would store {needed / 1e9:,.2f} GB of decoded images in {str(folder)!r}, which has "
            f"{free / 1e9:,.2f} GB free (1 GB kept spare). Set data.cache=false (decode on the fly), a smaller "
            "data.cache_size, data.cache_dir=/a/bigger/disk, or stream the data (data=streaming, docs/data.md)"
        )


def cache_key(paths: Sequence[str], size: int) -> str:
    """Changes whenever a source file's path, size or mtime changes, or the stored resolution does."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{int(size)}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Short side to ``size`` (bilinear, antialiased), centre crop to a square; returns CHW uint8."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


class DecodedImageCache:
    """Rows of resized images for ``paths``, in a memory-mapped ``.npy`` under ``cache_dir``."""

    def __init__(self, paths: Sequence[str], size: int, cache_dir: str | os.PathLike, name: str) -> None:
        self.paths = [canonical_path(p) for p in paths]
        self.size = int(size)
        self.cache_dir = Path(cache_dir)
        self.key = cache_key(self.paths, self.size)
        # The key is in the file name: runs over different sample lists (e.g. another data.dedupe)
        # get their own array and never overwrite one another's rows while training.
        self.array_file = self.cache_dir / f"decoded-{name}-{self.size}px-{self.key[:16]}.npy"
        self.manifest_file = self.array_file.with_suffix(".json")
        self.row = {p: i for i, p in enumerate(self.paths)}
        self.rebuilt = False
        self._array: np.ndarray | None = None

    def ensure(self, progress: bool = True) -> DecodedImageCache:
        """Build the array unless a manifest with the same key is already there."""
        key = self.key
        if self._manifest_key() == key and self.array_file.is_file():
            log.info("decoded-image cache hit: %s (%d images)", self.array_file, len(self.paths))
            return self
        self._build(key, progress)
        return self

    def _manifest_key(self) -> str | None:
        try:
            return json.loads(self.manifest_file.read_text()).get("key")
        except (OSError, ValueError):
            return None

    def _build(self, key: str, progress: bool) -> None:
        log.info("building decoded-image cache %s (%d images at %d px)", self.array_file, len(self.paths), self.size)
        check_free_space(self.cache_dir, cache_bytes(len(self.paths), self.size))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.array_file.with_name(f".{self.array_file.name}.{os.getpid()}.tmp")
        shape = (len(self.paths), 3, self.size, self.size)
        try:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            rows = range(len(self.paths))
            if progress and len(self.paths) > 200:
                from rich.progress import track

                rows = track(rows, description="caching decoded images", transient=True)
            for i in rows:
                array[i] = resize_square(load_rgb(self.paths[i]), self.size)
            array.flush()
            del array
            self.manifest_file.unlink(missing_ok=True)  # never a new array under an old manifest
            os.replace(tmp, self.array_file)
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_json(self.manifest_file, {"key": key, "size": self.size, "paths": self.paths})
        self._array = None
        self.rebuilt = True

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.array_file, mmap_mode="r")
        return self._array

    def image(self, path: str) -> torch.Tensor:
        """The cached CHW uint8 tensor of ``path``."""
        return torch.from_numpy(np.array(self.array[self.row[path]]))

    def __getstate__(self) -> dict[str, Any]:  # workers re-open the memmap instead of pickling its data
        state = dict(self.__dict__)
        state["_array"] = None
        return state


class CachedImageDataset(Dataset):
    """(image, label) pairs read from a :class:`DecodedImageCache` as uint8 tensors."""

    def __init__(self, samples: Sequence[Any], cache: DecodedImageCache, transform: Callable | None = None) -> None:
        self.samples = list(samples)
        self.cache = cache
        self.transform = transform
        self.keys = [canonical_path(s.path) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.cache.image(self.keys[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.samples[index].label
