"""Atomic file writes: a reader never sees a half-written file, even if the process is killed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clipft.errors import DiskFull


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise disk_full(path.parent, len(data)) from None
        raise
    return path


def disk_full(folder: str | os.PathLike, needed: int | None = None) -> DiskFull:
    """The one-line error for ENOSPC: which folder, how much it needed and how much is free."""
    folder = Path(folder)
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    need = f" {needed / 1e6:,.1f} MB" if needed else ""
    return DiskFull(
        f"no space left on the device of {str(folder)!r}: writing{need} failed ({free}); nothing was half-written. "
        "Free some space there, or write runs elsewhere (paths.log_dir=/bigger/disk), then rerun "
        "(ckpt_path=last resumes a training run)"
    )


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def append_json_line(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON record to a ``.jsonl`` log (one line per event; readers skip a torn last line)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_json_default) + "\n")
