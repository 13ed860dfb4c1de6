"""What a run directory records about where it came from: commit, versions, timing."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("clipft", "torch", "torchvision", "lightning", "transformers", "torchmetrics", "hydra-core", "open_clip_torch")


def _git(args: list[str], cwd: str | Path | None, timeout: float) -> str | None:
    """``git <args>``'s stdout, or None outside a repository / without git."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_commit(cwd: str | Path | None = None) -> str | None:
    out = _git(["rev-parse", "HEAD"], cwd, timeout=5)
    return (out or "").strip() or None


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether tracked files differ from the commit (the commit alone would not reproduce the run); None outside git."""
    out = _git(["status", "--porcelain", "--untracked-files=no"], cwd, timeout=10)
    return None if out is None else bool(out.strip())


def parameter_counts(model: Any) -> dict[str, int]:
    """Total and trainable parameters when the run starts (a frozen tower counts in total only)."""
    params = list(model.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_info(cwd: str | Path | None = None, model: Any = None) -> dict[str, Any]:
    """``metrics.json["run"]`` and the W&B config's ``run``: commit, dirty flag, versions, device (+ parameter counts)."""
    import torch

    info = {
        "git_commit": git_commit(cwd),
        "git_dirty": git_dirty(cwd),
        "versions": package_versions(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    if model is not None:
        info["parameters"] = parameter_counts(model)
    return info
