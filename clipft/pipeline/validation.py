"""Check a composed config before anything is built: one clear line instead of a deep torch trace.

Unknown group options (``model=foo``) are Hydra's own error, which already lists the available
options. This step catches what Hydra cannot, before anything expensive is built: a required
value left ``???``, a path that does not exist, and the run-level and trainer values in ``RULES``.
Data and model values are checked once, by the class that owns them
(``ImageClassificationDataModule.check_arguments``, ``ClassificationModule.check_arguments`` and the
subclasses that extend them): this step only runs those checks on the ``data`` and ``model`` nodes,
so a bad batch size or learning rate fails before the data scan. Each error names the key, the bad value and what is
allowed; rules whose key is absent from the config (another datamodule) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.errors import CheckpointError, ClipftError, ConfigError
from clipft.prompts import resolve_project_file

_MISSING = object()

# what a `???` key needs, for the ones users most often forget
MISSING_HINTS = {
    "data.root": "the dataset folder, e.g. data.root=/path/to/images (README.md, section \"Data\")",
    "ckpt_path": "a checkpoint file, e.g. ckpt_path=outputs/<run>/<time>/checkpoints/best.ckpt",
    "init_from": "the checkpoint whose weights start this run, e.g. init_from=outputs/<run>/<time>/checkpoints/best.ckpt",
    "model.init_head_from": "the linear-probe run's checkpoint, e.g. model.init_head_from=RUN_LP/checkpoints/best.ckpt",
}


@dataclass(frozen=True)
class Rule:
    """``key`` must satisfy ``check``; ``allowed`` says what is accepted, in the user's words."""

    key: str
    check: Callable[[Any], bool]
    allowed: str


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def non_negative(value: Any) -> bool:
    return _number(value) and value >= 0


def positive_int(value: Any) -> bool:
    return _int(value) and value >= 1


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "16", "bf16", "64-true", "64", "transformer-engine")

RULES: tuple[Rule, ...] = (
    Rule("seed", optional(_int), "an integer or null"),
    Rule("trainer.max_epochs", lambda v: v is None or (_int(v) and (v >= 1 or v == -1)), "an integer >= 1 (or -1: no limit)"),
    Rule("trainer.accumulate_grad_batches", positive_int, "an integer >= 1"),
    Rule("trainer.gradient_clip_val", optional(non_negative), "a number >= 0 or null"),
    Rule("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {list(PRECISIONS)}"),
)


def validate_config(cfg: DictConfig, task: str = "train") -> None:
    """Raise :class:`ConfigError` naming the first bad key, its value and what is allowed."""
    _check_missing(cfg)
    for rule in RULES:
        value = _select(cfg, rule.key)
        if value is _MISSING:
            continue
        if not rule.check(value):
            raise ConfigError(f"{rule.key}={value!r} is not allowed: expected {rule.allowed}")
    _check_data_arguments(cfg)
    _check_model_arguments(cfg)
    _check_paths(cfg, task)


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _check_missing(cfg: DictConfig) -> None:
    missing: list[str] = []
    for key in cfg:
        if key == "hydra":  # Hydra's own node holds sweep-only `???` keys
            continue
        if OmegaConf.is_missing(cfg, key):
            missing.append(str(key))
        elif OmegaConf.is_config(cfg._get_node(key)):
            missing.extend(OmegaConf.missing_keys(cfg[key]))
    # a recipe that needs the user's folder sets data.root: null (merging ??? over the data group's default
    # keeps the default, so an experiment cannot write ???): null is "not set" for every datamodule
    if "data" in cfg and OmegaConf.is_config(cfg._get_node("data")) and "root" in cfg.data and not OmegaConf.is_missing(cfg.data, "root") \
            and cfg.data.root is None:
        missing.append("data.root")
    missing.sort()
    if missing:
        key = missing[0]
        hint = MISSING_HINTS.get(key, f"set it on the command line: {key}=...")
        others = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(f"{key} is required but not set (???): pass {hint}{others}")


def _node_arguments(cfg: DictConfig, node: str) -> dict[str, Any]:
    """The resolvable values of ``cfg.<node>`` (a value only the run can resolve is left to the constructor)."""
    arguments: dict[str, Any] = {}
    for key in cfg[node]:
        try:
            value = _select(cfg, f"{node}.{key}")
        except Exception:  # noqa: BLE001 - a value only the run can resolve: the constructor checks it
            continue
        if value is not _MISSING:
            arguments[str(key)] = value
    return arguments


def _owner_class(cfg: DictConfig, node: str, base: type) -> type | None:
    """The class ``cfg.<node>._target_`` names, if it is a ``base`` (None: building it reports the problem)."""
    target = _select(cfg, f"{node}._target_")
    if not isinstance(target, str):
        return None
    from clipft.utils.locate import locate

    try:
        owner = locate(target)
    except ClipftError:
        return None
    return owner if isinstance(owner, type) and issubclass(owner, base) else None


def _check_data_arguments(cfg: DictConfig) -> None:
    """The datamodule's own argument check (``ImageClassificationDataModule.check_arguments``), run on the ``data``
    node before the data scan; its messages already name ``data.<key>``."""
    from clipft.data.base import ImageClassificationDataModule

    owner = _owner_class(cfg, "data", ImageClassificationDataModule)
    if owner is not None:
        owner.check_arguments(_node_arguments(cfg, "data"))


def _check_model_arguments(cfg: DictConfig) -> None:
    """The model's own argument check (its class's ``check_arguments``), run on the ``model`` node now: the model
    is built only after the datamodule has scanned the data, and a bad learning rate must not wait for that.
    The rules live with the class; this names the key the way the config does (``model.optimizer.lr=...``)."""
    from clipft.methods.classification import ClassificationModule

    module_class = _owner_class(cfg, "model", ClassificationModule)
    if module_class is None:
        return
    try:
        module_class.check_arguments(_node_arguments(cfg, "model"))
    except ClipftError as exc:
        if exc.config_path is None:  # "optimizer.lr=-1 ..." -> "model.optimizer.lr=-1 ..."
            raise type(exc)(f"model.{exc}") from None
        raise exc.located("model") from None


def _check_paths(cfg: DictConfig, task: str) -> None:
    descriptions = _select(cfg, "model.prompts.descriptions")
    if isinstance(descriptions, str) and descriptions and not resolve_project_file(descriptions).is_file():
        raise ConfigError(
            f"model.prompts.descriptions={descriptions!r} does not exist; pass an existing YAML file "
            "(class name: description) or null"
        )
    if task == "eval":
        ckpt = _select(cfg, "ckpt_path")
        if isinstance(ckpt, str) and not Path(ckpt).expanduser().is_file():
            raise CheckpointError(
                f"ckpt_path={ckpt!r} does not exist; pass a checkpoint file such as "
                "outputs/<run>/<time>/checkpoints/best.ckpt"
            )

