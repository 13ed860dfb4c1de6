"""What a run directory records about where it came from: commit, versions, timing."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("clipft", "torch", "torchvision", "lightning", "transformers", "torchmetrics", "hydra-core", "open_clip_torch")


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_info(cwd: str | Path | None = None) -> dict[str, Any]:
    import torch

    return {
        "git_commit": git_commit(cwd),
        "versions": package_versions(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
