"""Pixel fingerprints: a hash of each image's decoded RGB pixels, kept in a SQLite index.

Two files with the same fingerprint are the same photo whatever their names or encodings, which
is what duplicate-aware splitting and the train/test leak check need. Decoding every image is the
slow part (about 8 ms a JPEG here), so:

* results are kept in an SQLite index (standard library; one row per file, updated in place)
  keyed by ``path + size + mtime``: a later setup decodes only new or changed files;
* a cheap first pass hashes each file's *bytes* (no decode): byte-identical files have identical
  pixels, so only one file per distinct byte content is decoded. Always safe; on the 58-class
  DATA it decodes 2,057 of 5,258 files (docs/performance.md);
* the decodes run in a process pool over the machine's cores (``workers``), and under DDP with
  an initialised process group each rank decodes its share, rank 0 alone writes the index and
  the others wait on a barrier;
* a file lock around read-decode-write: two processes that share a cache dir (ranks started by
  ``torchrun`` before the process group exists, two runs of a sweep) never write together and
  never decode twice: the second waits, then finds the first one's rows.

Decoding also validates: a file that cannot be decoded gets ``error`` instead of a hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from clipft.data.images import load_rgb
from clipft.data.paths import canonical_path
from clipft.errors import DataError

log = logging.getLogger(__name__)

INDEX_VERSION = 2
PARALLEL_MIN_FILES = 256  # below this a pool costs more to start than it saves
PROGRESS_MIN_FILES = 200
# the table's columns: the Fingerprint fields, in order (tested)
_COLUMNS = ("size", "mtime_ns", "hash", "width", "height", "error", "file_hash")


@dataclass(frozen=True)
class Fingerprint:
    """What decoding one file found: a pixel hash and size, or the reason it could not be decoded."""

    size: int
    mtime_ns: int
    hash: str | None = None
    width: int = 0
    height: int = 0
    error: str | None = None
    file_hash: str | None = None  # blake2b of the file's bytes (the cheap first pass)

    @property
    def ok(self) -> bool:
        return self.error is None


def pixel_hash(pixels: np.ndarray) -> str:
    """blake2b of shape + bytes of an HxWx3 uint8 array."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def bytes_hash(path: str | os.PathLike) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def decode_pixels(path: str | os.PathLike) -> tuple[str | None, int, int, str | None]:
    """Decode ``path``: ``(pixel hash, width, height, None)``, or ``(None, 0, 0, reason)`` if it cannot be.

    Size, mtime and the bytes' hash come from the first pass (:func:`_first_pass`): not read again here.
    """
    try:
        pixels = np.asarray(load_rgb(path))
    except DataError as exc:
        return None, 0, 0, str(exc)
    return pixel_hash(pixels), pixels.shape[1], pixels.shape[0], None


def _first_pass(path: str) -> tuple[str, int, int, str]:
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns, bytes_hash(path)


def default_workers() -> int:
    """The cores this process may use (its CPU affinity), shared by the local DDP ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local_ranks))


class FingerprintIndex:
    """``path -> Fingerprint``, persisted in the SQLite file ``index_file`` (``None``: in memory only).

    Args:
        index_file: the ``.sqlite`` index; ``None`` keeps nothing between calls.
        workers: processes decoding in parallel (``None``: :func:`default_workers`, 1: serial).
    """

    def __init__(self, index_file: str | os.PathLike | None, workers: int | None = None) -> None:
        self.index_file = Path(index_file) if index_file else None
        self.workers = int(workers) if workers else default_workers()
        if self.workers < 1:
            raise DataError(f"fingerprint workers must be >= 1, got {workers!r}")
        self.entries: dict[str, Fingerprint] = {}
        self.decoded = 0  # files decoded by the last lookup (the others: index hits and byte copies)

    # ------------------------------------------------------------------ storage
    def _connect(self) -> sqlite3.Connection | None:
        if self.index_file is None:
            return None
        try:
            self.index_file.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.index_file, timeout=600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS fingerprints (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                "hash TEXT, width INTEGER, height INTEGER, error TEXT, file_hash TEXT)"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            version = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
            if version is None or version[0] != str(INDEX_VERSION):
                db.execute("DELETE FROM fingerprints")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (str(INDEX_VERSION),))
                db.commit()
            return db
        except sqlite3.DatabaseError as exc:  # a corrupt or foreign file only costs speed
            log.warning("fingerprint index %s is unreadable (%s); decoding without it", self.index_file, exc)
            return None
        except OSError as exc:  # a read-only cache dir only costs speed
            log.warning("cannot open fingerprint index %s (%s); decoding without it", self.index_file, exc)
            return None

    def _load(self, db: sqlite3.Connection | None) -> None:
        if db is None:
            return
        rows = db.execute(f"SELECT path, {', '.join(_COLUMNS)} FROM fingerprints")
        self.entries.update({row[0]: Fingerprint(*row[1:]) for row in rows})

    def _store(self, db: sqlite3.Connection | None, new: dict[str, Fingerprint]) -> None:
        if db is None or not new:
            return
        try:
            with db:
                db.executemany(
                    f"INSERT OR REPLACE INTO fingerprints VALUES (?, {', '.join('?' for _ in _COLUMNS)})",
                    [(path, *astuple(fp)) for path, fp in new.items()],
                )
        except sqlite3.DatabaseError as exc:
            log.warning("cannot write fingerprint index %s (%s); the next setup will decode again", self.index_file, exc)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive advisory lock beside the index (POSIX); no-op where ``fcntl`` is missing."""
        if self.index_file is None:
            yield
            return
        try:
            import fcntl
        except ImportError:  # Windows: SQLite's own locking still prevents torn writes
            yield
            return
        try:
            handle = open(self.index_file.with_name(self.index_file.name + ".lock"), "a")  # noqa: SIM115 - closed by the with below
        except OSError:
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ lookup
    def lookup(self, paths: Iterable[str | os.PathLike], progress: bool = True) -> dict[str, Fingerprint]:
        """Fingerprints of ``paths``, decoding only files whose size or mtime changed since last time."""
        paths = list(dict.fromkeys(canonical_path(p) for p in paths))
        dist = _process_group()
        # under DDP only rank 0 touches the file (and its lock): the others get its rows by broadcast
        lock = self._locked() if dist is None or dist[0] == 0 else contextlib.nullcontext()
        with lock:
            db = self._connect() if dist is None or dist[0] == 0 else None
            try:
                if dist is not None:
                    self._load_on_rank0_and_share(db, dist)
                else:
                    self._load(db)
                stale = self._stale(paths)
                if dist is not None:
                    new = self._fingerprint_distributed(stale, dist, progress)
                else:
                    new = self._fingerprint(stale, progress)
                self.entries.update(new)
                self._store(db, new)
            finally:
                if db is not None:
                    db.close()
        if dist is not None:
            _barrier()  # the others wait until rank 0 has written the index
        return {p: self.entries[p] for p in paths}

    def _stale(self, paths: list[str]) -> list[str]:
        stale = []
        for path in paths:
            try:
                stat = os.stat(path)
            except FileNotFoundError as exc:
                raise DataError(f"image file {path!r} does not exist (was the dataset moved or deleted?)") from exc
            known = self.entries.get(path)
            if known is None or known.size != stat.st_size or known.mtime_ns != stat.st_mtime_ns:
                stale.append(path)
        return stale

    def _fingerprint(self, stale: list[str], progress: bool) -> dict[str, Fingerprint]:
        """Bytes first, then one decode per distinct byte content not already known."""
        if not stale:
            self.decoded = 0
            return {}
        log.info("fingerprinting %d images (%d workers)", len(stale), self.workers)
        show = progress and len(stale) > PROGRESS_MIN_FILES
        first = self._map(_first_pass, stale, "hashing file bytes", show)
        # file hash -> (pixel hash, width, height, error): what the index knows, then one decode per new content
        by_bytes = {fp.file_hash: (fp.hash, fp.width, fp.height, fp.error) for fp in self.entries.values() if fp.file_hash}
        to_decode: dict[str, str] = {}  # file hash -> the one path decoded for it
        for path, _, _, file_hash in first:
            if file_hash not in by_bytes:
                to_decode.setdefault(file_hash, path)
        decoded = self._map(decode_pixels, list(to_decode.values()), "decoding images", show)
        by_bytes.update(zip(to_decode, decoded))
        self.decoded = len(decoded)
        return {path: Fingerprint(size, mtime_ns, *by_bytes[file_hash], file_hash) for path, size, mtime_ns, file_hash in first}

    def _map(self, fn, items: list[str], description: str, show: bool) -> list:
        if self.workers == 1 or len(items) < PARALLEL_MIN_FILES:
            return list(_progress(map(fn, items), len(items), description, show))
        chunksize = max(1, min(256, len(items) // (self.workers * 8)))
        with ProcessPoolExecutor(max_workers=self.workers) as pool:
            return list(_progress(pool.map(fn, items, chunksize=chunksize), len(items), description, show))

    # ------------------------------------------------------------------ DDP
    def _load_on_rank0_and_share(self, db: sqlite3.Connection | None, dist: tuple[int, int]) -> None:
        import torch.distributed as torch_dist

        if dist[0] == 0:
            self._load(db)
        shared = [{p: astuple(fp) for p, fp in self.entries.items()} if dist[0] == 0 else None]
        torch_dist.broadcast_object_list(shared, src=0)
        self.entries = {p: Fingerprint(*row) for p, row in shared[0].items()}

    def _fingerprint_distributed(self, stale: list[str], dist: tuple[int, int], progress: bool) -> dict[str, Fingerprint]:
        """Each rank fingerprints every ``world``-th stale file; all ranks get the union."""
        import torch.distributed as torch_dist

        rank, world = dist
        mine = self._fingerprint(stale[rank::world], progress and rank == 0)
        gathered: list = [None] * world
        torch_dist.all_gather_object(gathered, {p: astuple(fp) for p, fp in mine.items()})
        return {p: Fingerprint(*row) for part in gathered for p, row in part.items()}


def _process_group() -> tuple[int, int] | None:
    """``(rank, world_size)`` when a torch.distributed group of more than one process is initialised."""
    try:
        import torch.distributed as torch_dist
    except ImportError:  # pragma: no cover - torch always has it
        return None
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or torch_dist.get_world_size() < 2:
        return None
    return torch_dist.get_rank(), torch_dist.get_world_size()


def _barrier() -> None:
    import torch.distributed as torch_dist

    torch_dist.barrier()


def _progress(items: Iterable, total: int, description: str, enabled: bool) -> Iterable:
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)

