"""Import an object by dotted path (``torch.optim.AdamW``): the one place clipft resolves ``_target_`` strings.

Only trusted configs reach it directly; names read from checkpoints pass
:mod:`clipft.utils.safe_targets` first.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipft.errors import ConfigError


def locate(path: str) -> Any:
    """Import ``package.module.attr`` (attributes may be nested)."""
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"_target_ must be a dotted import path like 'torch.optim.AdamW', got {path!r}")
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ConfigError(f"_target_ {path!r} cannot be imported: check the spelling and that its package is installed")
