"""A Lightning ``CheckpointIO`` plugin: checkpoints are written atomically and read safely.

Writes: the checkpoint is serialised in memory, written to a temp file *beside* the target,
fsync'ed and renamed over it (:func:`clipft.utils.io.atomic_write_bytes`), so ``last.ckpt`` is
either the previous complete file or the new complete file, even if the process is SIGKILLed
mid-write. (Lightning's default stages local files in the system temp folder and moves them,
which is a copy, not a rename, when that folder is on another filesystem, and never fsyncs.)

Reads: always ``torch.load(weights_only=True)``, and a file that
cannot be read (truncated, not a checkpoint, needs unpickling) is a :class:`CheckpointError`
naming the file, not a deep unpickling trace.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from clipft.errors import CheckpointError
from clipft.utils.io import atomic_write_bytes


def write_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` into memory, then one atomic write (temp file + fsync + rename): never half-written."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return atomic_write_bytes(Path(path), buffer.getbuffer())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Temp file + fsync + rename for local paths; remote URLs (``s3://`` ...) go through Lightning."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options, got {storage_options!r}")
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is always True: a caller's (or Lightning's) weights_only=False is not honoured,
        # since unpickling a file can run any code (docs/reliability.md)
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_checkpoint(path, map_location or "cpu")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The one safe reader of local checkpoints (Lightning's restore, ``load_module``, resume, warm
    start): ``torch.load(weights_only=True)``, with no way to ask for unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated files and unsafe pickles are reported alike
        blocked = _blocked_global(str(exc))
        if blocked is not None:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was refused: it holds pickled objects ({blocked}) that only "
                "torch.load(weights_only=False) would build, and unpickling a file can run any code. "
                "clipft never does that; re-save the weights from a source you trust (clipft checkpoints "
                "hold only tensors and plain data)"
            ) from None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded safely with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {detail}); the file may be "
            "truncated or not a checkpoint: use another checkpoint (e.g. best.ckpt)"
        ) from exc


# torch >= 2.6: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
# older: "Unsupported global: GLOBAL os.system was not an allowed global by default."
_BLOCKED_PATTERNS = (
    re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", re.IGNORECASE),
    re.compile(r"Unsupported global: GLOBAL (\S+)", re.IGNORECASE),
    re.compile(r"unsupported GLOBAL (\S+)", re.IGNORECASE),
)


def _blocked_global(message: str) -> str | None:
    """What torch's weights-only unpickler refused, if that is why the load failed."""
    for pattern in _BLOCKED_PATTERNS:
        match = pattern.search(message)
        if match:
            return f"GLOBAL {match.group(1)}"
    return None  # e.g. "Unsupported operand 110": garbage bytes, not a payload


def with_atomic_checkpoint_io(plugins: Any = None) -> list[Any]:
    """The trainer's plugins (configs are built) plus :class:`AtomicCheckpointIO`, unless one
    already sets the checkpoint IO."""
    from lightning.fabric.plugins.io import CheckpointIO

    from clipft.utils.instantiate import instantiate

    if plugins is None:
        plugins = []
    elif not isinstance(plugins, (list, tuple)):
        plugins = [plugins]
    built = [instantiate(p) if isinstance(p, dict) else p for p in plugins]
    if not any(isinstance(p, CheckpointIO) for p in built):
        built.append(AtomicCheckpointIO())
    return built
