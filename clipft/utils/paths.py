"""Path containment: the one check behind "nothing outside the root / the run directory"."""

from __future__ import annotations

import os
from pathlib import Path


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` resolves (symlinks and ``..`` too) to a place inside ``folder`` (resolved the same way)."""
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(folder)))
