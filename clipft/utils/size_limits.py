"""Upper bounds on every size a file can set, checked before anything is allocated.

A checkpoint, a backbone folder's JSON, an HF ``config.json`` or a run's ``config.yaml`` can hold
``image_size: 60000`` or 65536-wide layers: building that tries to allocate tens of GB, a memory
denial of service on a shared host, and ends in an "out of memory" that blames the batch size.
The bounds sit far above every real CLIP (ViT-bigG: width 1664, 48 layers, 224-448 px) and below
what would exhaust a workstation. ``CLIPFT_SIZE_LIMITS=off`` lifts them (a file you trust, an
unusually large model); so does ``--trust-checkpoint`` / ``trust_checkpoint=true`` for a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from clipft.errors import ConfigError

ENV = "CLIPFT_SIZE_LIMITS"
# key (as HF, open_clip, timm and clipft spell it) -> the largest value accepted
LIMITS: dict[str, int] = {
    "image_size": 4096,
    "hidden_size": 8192,
    "width": 8192,
    "embed_dim": 8192,
    "projection_dim": 8192,
    "intermediate_size": 32768,
    "num_hidden_layers": 128,
    "layers": 128,
    "num_attention_heads": 256,
    "heads": 256,
    "vocab_size": 1_048_576,
    "max_position_embeddings": 16384,
    "context_length": 16384,
    "max_length": 16384,
    "max_text_length": 16384,
    "patch_size": 1024,
    "num_channels": 64,
    "num_classes": 100_000,
}
MAX_CLASSES = LIMITS["num_classes"]
# a transformer tower's weights, estimated as layers x (4 H^2 + 2 H x MLP width): ViT-bigG's is ~1.8e9
MAX_TOWER_PARAMETERS = 4_000_000_000


class SizeLimitError(ConfigError):
    """A file (or a setting) asks for a size beyond clipft's bounds."""


def limits_enabled() -> bool:
    return os.environ.get(ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def opt_out_hint() -> str:
    return f"if the size is intended, set {ENV}=off (or pass --trust-checkpoint for a checkpoint you trust)"


def check_size(key: str, value: Any, where: str, source: str = "") -> None:
    """``value`` (an integer setting called ``key``) is within its bound, or one line naming both."""
    bound = LIMITS.get(key)
    if bound is None or not limits_enabled() or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value > bound:
        prefix = f"{source!r}: " if source else ""
        raise SizeLimitError(f"{prefix}{where}={value:g} exceeds clipft's bound of {bound} for {key!r}; {opt_out_hint()}")


def check_sizes(value: Any, where: str, source: str = "") -> None:
    """Every bounded key at any depth of ``value`` (a file's config), and each tower's estimated size."""
    if not limits_enabled():
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                check_size(key, item, f"{where}.{key}", source)
            check_sizes(item, f"{where}.{key}", source)
        _check_tower_parameters(value, where, source)
        names = value.get("class_names")
        if isinstance(names, (list, tuple)):
            check_size("num_classes", len(names), f"{where}.class_names (count)", source)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_sizes(item, f"{where}[{i}]", source)


def _check_tower_parameters(config: Mapping[str, Any], where: str, source: str) -> None:
    width = config.get("hidden_size", config.get("width"))
    layers = config.get("num_hidden_layers", config.get("layers"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, layers)):
        return
    mlp = config.get("intermediate_size")
    mlp = mlp if isinstance(mlp, int) and not isinstance(mlp, bool) and mlp > 0 else 4 * width
    estimate = layers * (4 * width * width + 2 * width * mlp)
    if estimate > MAX_TOWER_PARAMETERS:
        prefix = f"{source!r}: " if source else ""
        raise SizeLimitError(
            f"{prefix}{where} describes a tower of about {estimate / 1e9:.0f} billion weights "
            f"(width {width}, {layers} layers), beyond clipft's bound of {MAX_TOWER_PARAMETERS / 1e9:.0f} billion; "
            f"{opt_out_hint()}"
        )
