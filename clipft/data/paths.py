"""Where a configured data path points: ``~`` expanded, relative paths tried against cwd then the project root."""

from __future__ import annotations

import os
from pathlib import Path

from clipft.errors import DataError


def resolve_path(
    path: str | os.PathLike | None,
    key: str = "data.root",
    base_dir: str | os.PathLike | None = None,
    must_exist: bool = True,
    hint: str = "",
) -> Path:
    """The absolute path ``path`` means; a missing one raises a DataError listing every path tried.

    A relative path is looked up against the current directory (where the user typed the command)
    and then against ``base_dir`` (``paths.root_dir``: the project root, or ``$CLIPFT_ROOT``).
    """
    if path is None or str(path).strip() in ("", "???"):
        raise DataError(f"{key} is not set; pass {key}=/path/to/dataset{hint}")
    raw = Path(os.path.expandvars(str(path))).expanduser()
    candidates = [raw] if raw.is_absolute() else [Path.cwd() / raw]
    if not raw.is_absolute() and base_dir:
        candidates.append(Path(base_dir).expanduser() / raw)
    candidates = list(dict.fromkeys(c.resolve() for c in candidates))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    if not must_exist:
        return candidates[0]
    tried = " or ".join(repr(str(c)) for c in candidates)
    raise DataError(f"{key}={str(path)!r} does not exist (tried {tried}); fix {key}{hint}")


def canonical_path(path: str | os.PathLike) -> str:
    """The key a file is known by in the fingerprint index and the decoded-image cache: its absolute path.

    ``os.path.abspath`` touches no file. ``Path.resolve`` would ``lstat`` every component of every
    path (about 4 million calls for 10^5 images, most of a second setup's time). A file reached
    through two symlinked paths gets two index rows, which costs one extra decode and no
    correctness: duplicates are found by pixel hash, not by path.
    """
    return os.path.abspath(os.fspath(path))


def default_cache_dir() -> Path:
    """``$CLIPFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/clipft``, else ``~/.cache/clipft``."""
    if os.environ.get("CLIPFT_CACHE_DIR"):
        return Path(os.environ["CLIPFT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "clipft"
