"""Finding run folders: a path may be a run, a sweep, a tree of runs or one ``metrics.json``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from clipft.errors import DataError
from clipft.results.records import HYDRA_DIR, METRICS_FILE, is_run_dir


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory under ``paths`` (a path may be a run, a sweep, a tree or a metrics.json)."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{str(path)!r} does not exist: pass run folders, sweep folders or metrics.json files")
        if path.is_file():
            if path.name != METRICS_FILE:
                raise DataError(f"{str(path)!r} is a file but not a {METRICS_FILE}")
            found[path.parent.resolve()] = None
            continue
        candidates = [path, *(p.parent for p in path.rglob(METRICS_FILE)), *(p.parent for p in path.rglob(HYDRA_DIR))]
        for cand in candidates:
            if is_run_dir(cand) and not _inside_checkpoint_tree(cand, path):
                found[cand.resolve()] = None
    return sorted(found)


def _inside_checkpoint_tree(cand: Path, root: Path) -> bool:
    # wandb/csv logger folders never hold .hydra or metrics.json, but guard against nested copies
    return any(part in ("checkpoints", "wandb") for part in cand.relative_to(root).parts) if cand != root else False
