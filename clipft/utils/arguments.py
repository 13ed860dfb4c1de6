"""Argument checks constructors share, so a bad value is one line naming the parameter."""

from __future__ import annotations

from typing import Any

from clipft.errors import ConfigError
from clipft.utils.size_limits import check_size


def check_image_size(value: Any, name: str = "image_size") -> int | None:
    """``None`` (take the default) or an integer >= 1; ``0`` must not silently become 224."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} is not allowed: expected an integer >= 1 (pixels) or null")
    check_size("image_size", value, name)  # before any tensor of that size is allocated
    return value
