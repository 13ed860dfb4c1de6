"""What a checkpoint may name: a registry of buildable classes, never dotted paths taken from a file.

A clipft checkpoint records its LightningModule class and, inside its hyper-parameters, the
``_target_`` of its backbone, optimizer and scheduler. Resolving those strings with
``importlib`` would let a crafted file call any function (``{'module': 'os.system'}``). So a
file is checked **before anything is imported or built**: every name must be in this registry
(:mod:`clipft.registry`: clipft's own methods and backbones, torch optimizers and schedulers,
what installed ``clipft.plugins`` packages register), and every value must be plain data (str, number, bool,
None, list, dict) that the class's signature accepts. Anything else is refused with one line.

``trust_checkpoint=True`` (``--trust-checkpoint`` on the CLIs, after transformers'
``trust_remote_code``) lifts the registry for a file from a source you trust: the file may then
run any code its names point to.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import inspect
from collections.abc import Iterator, Mapping, Set
from typing import Any

from clipft import registry
from clipft.errors import CheckpointError, ConfigError

# torch's optimizers and schedulers, registered by their public names (``torch.optim.AdamW``). A
# checkpoint's names are only ever looked up in clipft.registry (methods, backbones, what plugins
# add); nothing a file names is imported before it is found there.
_OPTIMIZERS = ("AdamW", "Adam", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam")
# LambdaLR / MultiplicativeLR take callables, which a checkpoint cannot hold: left out on purpose.
_SCHEDULERS = (
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "CyclicLR",
    "ReduceLROnPlateau",
)
for _name in _OPTIMIZERS:
    registry.register_path("optimizer", f"torch.optim.{_name}")
for _name in _SCHEDULERS:
    registry.register_path("scheduler", f"torch.optim.lr_scheduler.{_name}")

# optimizers of optional packages: a checkpoint may name them only where the package is installed
# (found without importing it), and a config naming one without it gets one line saying what to install
OPTIONAL_OPTIMIZERS = {"bitsandbytes.optim.AdamW8bit": "bitsandbytes"}


def register_optional_optimizers(find_spec: Any = importlib.util.find_spec) -> list[str]:
    """Register each :data:`OPTIONAL_OPTIMIZERS` path whose package is installed; returns those registered."""
    found = [path for path, package in OPTIONAL_OPTIMIZERS.items() if find_spec(package) is not None]
    for path in found:
        registry.register_path("optimizer", path)
    return found


def check_optimizer_installed(target: Any, key: str = "model.optimizer._target_") -> None:
    """A :class:`~clipft.errors.ConfigError` naming the ``pip install`` when ``target`` is an optional
    optimizer whose package is missing (before anything is built)."""
    package = OPTIONAL_OPTIMIZERS.get(target) if isinstance(target, str) else None
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(f"{key}={target} needs the {package} package: pip install {package} (or choose torch.optim.AdamW)")


register_optional_optimizers()

# the kinds a checkpoint's nested ``_target_`` may name, and the kind its module must be
TARGET_KINDS = ("method", "backbone", "optimizer", "scheduler")
MODULE_KINDS = ("method",)


class RegisteredPaths(Set[str]):
    """A live, read-mostly view of the registry's dotted paths of some kinds (no second list of names).

    Membership loads clipft's own packages of those kinds and the ``clipft.plugins`` entry points
    first (once), so a fresh process knows every installed method and backbone."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds

    def _paths(self) -> set[str]:
        return registry.paths(*self.kinds)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path in self._paths()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._paths()))

    def __len__(self) -> int:
        return len(self._paths())

    def __repr__(self) -> str:
        return f"RegisteredPaths({self.kinds}: {len(self)} paths)"

    def add(self, path: str) -> None:
        register_safe_target(path, module=self.kinds == MODULE_KINDS)

    def discard(self, path: str) -> None:
        registry.unregister_path(path)


MODULE_TARGETS = RegisteredPaths(MODULE_KINDS)
SAFE_TARGETS = RegisteredPaths(TARGET_KINDS)
PLAIN_TYPES = (str, int, float, bool, type(None))

TRUST_HINT = (
    "load only checkpoints from a source you trust; to build it anyway pass --trust-checkpoint "
    "(CLIs) or trust_checkpoint=true (eval.py): DANGEROUS, the file may then run any code it names"
)

# True while clipft builds objects from a file it does not trust (clipft.utils.instantiate checks it)
_UNTRUSTED: contextvars.ContextVar[str | None] = contextvars.ContextVar("clipft_untrusted_source", default=None)


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint names something clipft does not build from files (it could run code)."""


def register_safe_target(path: str, module: bool = False, kind: str | None = None) -> None:
    """Allow ``path`` (``package.module.Class``) in checkpoints: ``module=True`` as a method (a
    LightningModule), else as ``kind`` (default ``backbone``). The same as
    ``clipft.registry.register_path(kind, path)``; prefer ``clipft.registry.register`` with the class.

    Only register classes whose constructors take data, never callables or shell commands.
    """
    registry.register_path("method" if module else (kind or "backbone"), str(path))


def untrusted_source() -> str | None:
    """The file being loaded without trust, or None (trusted config, library use)."""
    return _UNTRUSTED.get()


@contextlib.contextmanager
def building_from(source: str | None) -> Iterator[None]:
    """Within this block, :func:`clipft.utils.instantiate.instantiate` only builds registered targets
    (``source``: the untrusted file's name, for the message; None: no restriction)."""
    token = _UNTRUSTED.set(source)
    try:
        yield
    finally:
        _UNTRUSTED.reset(token)


def check_target_allowed(target: Any, where: str, source: str) -> None:
    if not isinstance(target, str) or target not in SAFE_TARGETS:
        raise UntrustedCheckpointError(
            f"{source!r} names {target!r} at {where}, which clipft does not build from a checkpoint "
            f"(a crafted file could run code this way); {TRUST_HINT}"
        )


def check_plain_data(value: Any, where: str, source: str) -> None:
    """Hyper-parameters are plain data: anything else in a file is refused."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UntrustedCheckpointError(f"{source!r}: key {key!r} at {where} is not a string; {TRUST_HINT}")
            check_plain_data(item, f"{where}.{key}", source)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain_data(item, f"{where}[{i}]", source)
    elif not isinstance(value, PLAIN_TYPES):
        raise UntrustedCheckpointError(
            f"{source!r}: {where} holds a {type(value).__name__}, not plain data (str, number, list, dict); {TRUST_HINT}"
        )


def check_no_remote_code(value: Any, where: str, source: str) -> None:
    """``trust_remote_code: true`` anywhere would run a model repository's Python: only from trusted files."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "trust_remote_code" and item:
                raise UntrustedCheckpointError(
                    f"{source!r} asks to run a model repository's own code ({where}.trust_remote_code=true); {TRUST_HINT}"
                )
            check_no_remote_code(item, f"{where}.{key}", source)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_no_remote_code(item, f"{where}[{i}]", source)


def check_nested_targets(value: Any, where: str, source: str) -> None:
    """Every ``_target_`` at any depth is registered and its arguments fit its signature."""
    if isinstance(value, Mapping):
        if "_target_" in value:
            target = value["_target_"]
            check_target_allowed(target, f"{where}._target_", source)
            params = {k: v for k, v in value.items() if isinstance(k, str) and not k.startswith("_")}
            check_arguments(resolve_registered(target), params, where, source, partial=True)
        for key, item in value.items():
            check_nested_targets(item, f"{where}.{key}", source)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_nested_targets(item, f"{where}[{i}]", source)


def check_arguments(target: Any, params: Mapping[str, Any], where: str, source: str, partial: bool = False) -> None:
    """``params`` binds to ``target``'s signature (``partial``: callers add positional args later)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing more to check than the name
    try:
        (signature.bind_partial if partial else signature.bind)(**params)
    except TypeError as exc:
        raise UntrustedCheckpointError(
            f"{source!r}: the arguments at {where} do not fit {getattr(target, '__qualname__', target)} ({exc}); "
            "was it written by another clipft version?"
        ) from None


def resolve_registered(target: str) -> Any:
    """The object registered under the dotted path ``target`` (checked against the registry first)."""
    entry = registry.find_path(target, (*TARGET_KINDS, "datamodule"))
    if entry is None:
        raise UntrustedCheckpointError(f"{target!r} is not registered in clipft.registry; {TRUST_HINT}")
    return entry.load()
