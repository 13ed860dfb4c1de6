"""The one gate for every config that comes from a file: nothing a file says is built before it passes.

A run's or a sweep's ``config.yaml``, a checkpoint's hyper-parameters, an export record, a backbone
folder's JSON and an HF folder's ``config.json`` are data from whoever wrote them. Building objects
from them (``hydra.utils.instantiate`` or clipft's own) resolves dotted paths, so a nested
``_target_: builtins.open`` or ``torch.load`` would run. Every such config goes through
:func:`gate_file_config` first; it checks, at every depth and before anything is imported:

- plain data only (str, number, bool, None, list, dict with string keys);
- no ``trust_remote_code: true`` (a model repository's own Python);
- the Hydra keys that choose code (``_target_``, ``_args_``, ``_partial_``, ...) only where the
  ``kind`` of file may hold them, naming only registered classes (:mod:`clipft.utils.safe_targets`)
  whose signatures accept the arguments;
- every size within :mod:`clipft.utils.size_limits`.

``trust=True`` (``--trust-checkpoint``, ``trust_checkpoint=true``) lifts the gate for a file you trust.
No other code builds objects from a file's config; ``tests/test_file_gate.py`` keeps it that way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from clipft.utils.safe_targets import (
    MODULE_TARGETS,
    TRUST_HINT,
    UntrustedCheckpointError,
    check_arguments,
    check_nested_targets,
    check_no_remote_code,
    check_plain_data,
    resolve_registered,
)
from clipft.utils.size_limits import check_sizes

# what a file may contain where a builder reads it
KINDS = ("module", "datamodule", "plain")
# Hydra's keys that choose or shape the code instantiate runs
HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_convert_", "_recursive_")


def gate_file_config(
    config: Any, source: str, kind: str, where: str = "config", *, root_targets: Collection[str] = (), trust: bool = False
) -> Any:
    """``config`` unchanged if it may be built; otherwise one :class:`UntrustedCheckpointError` line.

    ``kind``: ``module`` (a checkpoint's or export record's hyper-parameters: registered
    ``_target_``s at any depth), ``datamodule`` (a run's ``data`` node: one ``_target_`` at the root,
    one of ``root_targets``, and none below), ``plain`` (a backbone or HF folder's JSON: no Hydra key
    at all). ``source``: the file, for the message.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    if trust:
        return config
    check_plain_data(config, where, source)
    check_no_remote_code(config, where, source)
    check_sizes(config, where, source)
    if kind == "module":
        check_nested_targets(config, where, source)
    elif kind == "datamodule":
        _check_datamodule_node(config, where, source, root_targets)
    else:
        _refuse_hydra_keys(config, where, source)
    return config


def check_checkpoint(meta_module: Any, hparams: Any, source: str) -> Any:
    """The whole check of a file's module name and hyper-parameters; returns the module class."""
    if not isinstance(meta_module, str) or meta_module not in MODULE_TARGETS:
        raise UntrustedCheckpointError(
            f"{source!r} names the module {meta_module!r}, which is not one of clipft's LightningModules "
            f"({', '.join(sorted(m for m in MODULE_TARGETS if m.count('.') == 2))}); {TRUST_HINT}"
        )
    if not isinstance(hparams, Mapping):
        raise UntrustedCheckpointError(f"{source!r}: hyper_parameters is a {type(hparams).__name__}, not a mapping; {TRUST_HINT}")
    gate_file_config(hparams, source, "module", "hyper_parameters")
    cls = resolve_registered(meta_module)
    check_arguments(cls, hparams, "hyper_parameters", source)
    return cls


def gate_weights_checkpoint(ckpt: Mapping[str, Any], source: str, trust: bool = False) -> None:
    """A checkpoint only the weights of which are used (resume, ``init_from``, ``init_head_from``): its
    hyper-parameters still pass the gate, so a tampered file is refused, not half-used."""
    gate_file_config(ckpt.get("hyper_parameters") or {}, source, "module", "hyper_parameters", trust=trust)


def _check_datamodule_node(config: Any, where: str, source: str, root_targets: Collection[str]) -> None:
    if not isinstance(config, Mapping):
        raise UntrustedCheckpointError(f"{source!r}: {where} is a {type(config).__name__}, not a mapping of data settings")
    target = config.get("_target_")
    if target not in root_targets:
        raise UntrustedCheckpointError(
            f"{source!r} names {where}._target_={target!r}, which is not one of clipft's datamodules; "
            f"a config file may not choose code to run. Pass the data explicitly (data=...), or {TRUST_HINT}"
        )
    from clipft.utils.locate import locate

    params = {k: v for k, v in config.items() if not k.startswith("_")}
    check_arguments(locate(target), params, where, source, partial=True)
    for key, item in config.items():
        if key in HYDRA_KEYS[1:]:
            raise UntrustedCheckpointError(f"{source!r}: {where}.{key} is a Hydra key a data config never needs; {TRUST_HINT}")
        _refuse_hydra_keys(item, f"{where}.{key}", source)


def _refuse_hydra_keys(value: Any, where: str, source: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in HYDRA_KEYS:
                raise UntrustedCheckpointError(
                    f"{source!r} holds {where}.{key}={item!r}: no object is built from this part of the file "
                    f"(a crafted file could run code this way); {TRUST_HINT}"
                )
            _refuse_hydra_keys(item, f"{where}.{key}", source)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_hydra_keys(item, f"{where}[{i}]", source)


def read_yaml_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """A YAML file as a plain mapping (``yaml.safe_load``: no tags, no objects), or one ``error`` line."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise error(f"cannot read {str(path)!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(loaded, dict):
        raise error(f"{str(path)!r} holds a {type(loaded).__name__}, not a mapping of settings")
    return loaded


def read_json_mapping(path: str | Path, error: type[Exception]) -> dict[str, Any]:
    """A JSON file as a plain mapping, or one ``error`` line naming it."""
    import json

    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"{str(path)!r} cannot be read as JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise error(f"{str(path)!r} holds a {type(loaded).__name__}, not a JSON object")
    return loaded
