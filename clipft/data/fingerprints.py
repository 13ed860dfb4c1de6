"""Pixel fingerprints: a hash of each image's decoded RGB pixels, cached on disk.

Two files with the same fingerprint are the same photo whatever their names or encodings, which
is what duplicate-aware splitting and the train/test leak check need. Decoding every image is the
slow part (seconds per thousand PNGs), so results are kept in a JSON index keyed by
``path + size + mtime``: a second setup only decodes files that are new or changed. Decoding
also validates: a file that cannot be decoded gets ``error`` instead of a hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clipft.data.images import load_rgb
from clipft.errors import DataError
from clipft.utils.io import atomic_write_json

log = logging.getLogger(__name__)

INDEX_VERSION = 1


@dataclass(frozen=True)
class Fingerprint:
    """What decoding one file found: a pixel hash and size, or the reason it could not be decoded."""

    size: int
    mtime_ns: int
    hash: str | None = None
    width: int = 0
    height: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def pixel_hash(pixels: np.ndarray) -> str:
    """blake2b of shape + bytes of an HxWx3 uint8 array."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def fingerprint_file(path: str | os.PathLike) -> Fingerprint:
    stat = os.stat(path)
    try:
        pixels = np.asarray(load_rgb(path))
    except DataError as exc:
        return Fingerprint(stat.st_size, stat.st_mtime_ns, error=str(exc))
    return Fingerprint(stat.st_size, stat.st_mtime_ns, pixel_hash(pixels), pixels.shape[1], pixels.shape[0])


class FingerprintIndex:
    """``path -> Fingerprint``, persisted at ``index_file`` (``None``: in memory only)."""

    def __init__(self, index_file: str | os.PathLike | None) -> None:
        self.index_file = Path(index_file) if index_file else None
        self.entries: dict[str, Fingerprint] = {}
        if self.index_file is not None and self.index_file.is_file():
            try:
                raw = json.loads(self.index_file.read_text())
                if raw.get("version") == INDEX_VERSION:
                    self.entries = {p: Fingerprint(**e) for p, e in raw["entries"].items()}
            except (OSError, ValueError, TypeError, KeyError):
                log.warning("fingerprint index %s is unreadable; rebuilding it", self.index_file)

    def lookup(self, paths: Iterable[str], progress: bool = True) -> dict[str, Fingerprint]:
        """Fingerprints of ``paths``, decoding only files whose size or mtime changed since last time."""
        paths = list(dict.fromkeys(str(Path(p).resolve()) for p in paths))
        result: dict[str, Fingerprint] = {}
        stale: list[str] = []
        for path in paths:
            try:
                stat = os.stat(path)
            except FileNotFoundError as exc:
                raise DataError(f"image file {path!r} does not exist (was the dataset moved or deleted?)") from exc
            known = self.entries.get(path)
            if known is not None and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
                result[path] = known
            else:
                stale.append(path)
        if stale:
            log.info("fingerprinting %d images (%d cached)", len(stale), len(paths) - len(stale))
            for path in _progress(stale, "fingerprinting images", enabled=progress and len(stale) > 200):
                result[path] = self.entries[path] = fingerprint_file(path)
            self.save()
        return result

    def save(self) -> None:
        if self.index_file is None:
            return
        try:
            atomic_write_json(
                self.index_file,
                {"version": INDEX_VERSION, "entries": {p: asdict(e) for p, e in sorted(self.entries.items())}},
            )
        except OSError as exc:  # a read-only cache dir only costs speed
            log.warning("cannot write fingerprint index %s (%s); the next setup will decode again", self.index_file, exc)


def _progress(items: list[str], description: str, enabled: bool) -> Iterable[str]:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)
