"""Small shared helpers (config-driven construction, atomic file writes)."""

from clipft.utils.instantiate import instantiate
from clipft.utils.io import atomic_write_json, atomic_write_text

__all__ = ["atomic_write_json", "atomic_write_text", "instantiate"]
