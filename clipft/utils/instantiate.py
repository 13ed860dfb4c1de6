"""Build objects from ``{_target_: ..., ...}`` mappings without importing Hydra.

LightningModules keep their sub-configs (optimizer, scheduler, backbone) as plain dicts in
their hyper-parameters, so a checkpoint can be re-created (and loaded with
``weights_only=True``) without Hydra and without pickled callables.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from clipft.errors import ClipftError, ConfigError
from clipft.utils.locate import locate
from clipft.utils.safe_targets import check_target_allowed, untrusted_source

__all__ = ["instantiate", "locate"]


def instantiate(config: Mapping[str, Any] | None, *args: Any, config_path: str = "", **kwargs: Any) -> Any:
    """Call ``config['_target_']`` with the remaining keys (plus ``kwargs``); ``_partial_`` returns a partial.

    ``config_path``: where this config sits in its parent (``clip``, ``ensemble[1].clip``); a
    :class:`~clipft.errors.ClipftError` from the constructor is re-raised with it as a prefix.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ConfigError(f"expected a mapping with a '_target_' key, got {config!r}")
    source = untrusted_source()
    if source is not None:  # building from a checkpoint: registered targets only (clipft.utils.safe_targets)
        check_target_allowed(config["_target_"], "_target_", source)
    params = {k: v for k, v in config.items() if not k.startswith("_")}
    params.update(kwargs)
    target = locate(config["_target_"])
    if config.get("_partial_", False):
        return functools.partial(target, *args, **params)
    try:
        return target(*args, **params)
    except ClipftError as exc:
        raise exc.located(config_path) from None
