"""``model.compile``: ``torch.compile`` the backbone's towers, in place, for the GPU's throughput.

The towers are compiled with ``nn.Module.compile`` (in place: the module keeps its class, parameters and
``state_dict`` keys, so checkpoints written from a compiled run load into an eager one and back). Only
towers with a forward of their own are compiled (open_clip's text tower is a list of parts: skipped).

Values: ``false`` (default), ``true`` (torch.compile's defaults: inductor), a mode string
(``reduce-overhead``, ``max-autotune``) or a mapping of ``torch.compile`` keyword arguments
(``{mode: max-autotune, dynamic: false}``; ``{backend: aot_eager}`` traces without generating kernels).
Set it with ``+model.compile=true`` (the key is not in the model configs; the pipeline removes it before the
method is built). Compiling costs a warm-up of tens of seconds per tower on the first steps; methods that
swap the text tower's token embeddings per call (CoOp, CoCoOp, KgCoOp) recompile the text tower until
torch.compile falls back to eager for it, so for them the image tower is what gains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from clipft.errors import ConfigError
from clipft.models.contract import VisionLanguageBackbone

COMPILE_KEY = "compile"
COMPILE_OPTIONS = ("mode", "backend", "dynamic", "fullgraph", "options")


def compile_options(value: Any, key: str = "model.compile") -> dict[str, Any] | None:
    """``value`` as ``torch.compile`` keyword arguments, or None (do not compile)."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str) and value:
        return {"mode": value}
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(COMPILE_OPTIONS))
        if unknown:
            raise ConfigError(f"{key} takes the torch.compile arguments {list(COMPILE_OPTIONS)}, not {unknown}")
        return dict(value)
    raise ConfigError(f"{key} must be true, false, a torch.compile mode (e.g. max-autotune) or a mapping, got {value!r}")


def pop_compile(model_config: dict[str, Any], key: str = "model.compile") -> dict[str, Any] | None:
    """Remove ``compile`` from a method's config (no constructor takes it); its options, or None."""
    return compile_options(model_config.pop(COMPILE_KEY, None), key)


def has_own_forward(module: nn.Module) -> bool:
    """False for containers (``ModuleList``, ``ModuleDict``) that cannot be called."""
    return type(module).forward is not nn.Module.forward


def compile_towers(method: nn.Module, options: Mapping[str, Any] | None) -> list[str]:
    """Compile ``method.backbone``'s towers in place (a CNN backbone: the whole backbone); the names compiled."""
    if options is None:
        return []
    backbone = method.get_submodule("backbone") if "backbone" in dict(method.named_children()) else None
    if backbone is None:
        raise ConfigError(f"model.compile: {type(method).__name__} has no backbone to compile; remove model.compile")
    if isinstance(backbone, VisionLanguageBackbone):
        towers = {"image_tower": backbone.image_tower, "text_tower": backbone.text_tower}
    else:  # an ImageBackbone (CNN transfer): one module
        towers = {"backbone": backbone}
    compiled = []
    for name, tower in towers.items():
        if isinstance(tower, nn.Module) and has_own_forward(tower):
            tower.compile(**dict(options))
            compiled.append(name)
    return compiled
