"""What a checkpoint may name: a registry of buildable classes, never dotted paths taken from a file.

A clipft checkpoint records its LightningModule class and, inside its hyper-parameters, the
``_target_`` of its backbone, optimizer and scheduler. Resolving those strings with
``importlib`` would let a crafted file call any function (``{'module': 'os.system'}``). So a
file is checked **before anything is imported or built**: every name must be in this registry
(clipft's own modules and backbones, torch optimizers and schedulers, what extensions add
with :func:`register_safe_target`), and every value must be plain data (str, number, bool,
None, list, dict) that the class's signature accepts. Anything else is refused with one line.

``trust_checkpoint=True`` (``--trust-checkpoint`` on the CLIs, after transformers'
``trust_remote_code``) lifts the registry for a file from a source you trust: the file may then
run any code its names point to.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from clipft.errors import CheckpointError

# Written as strings so that checking a name never imports anything the file chose. Methods are
# not listed: every ClassificationModule subclass registers itself when its module is imported
# (clipft.methods.classification); clipft.methods.loading imports clipft.methods before any check.
_MODULES: tuple[str, ...] = ()
_BACKBONES = (
    "clipft.models.HFCLIPBackbone",
    "clipft.models.hf_clip.HFCLIPBackbone",
    "clipft.models.HFAutoBackbone",
    "clipft.models.hf_auto.HFAutoBackbone",
    "clipft.models.HFSiglipBackbone",
    "clipft.models.hf_siglip.HFSiglipBackbone",
    "clipft.models.OpenCLIPBackbone",
    "clipft.models.open_clip_backbone.OpenCLIPBackbone",
    "clipft.models.DualEncoderBackbone",
    "clipft.models.dual_encoder.DualEncoderBackbone",
    "clipft.models.TorchvisionBackbone",
    "clipft.models.torchvision_backbones.TorchvisionBackbone",
    "clipft.models.build_torchvision_backbone",
    "clipft.models.torchvision_backbones.build_torchvision_backbone",
)
_OPTIMIZERS = tuple(
    f"torch.optim.{name}"
    for name in ("AdamW", "Adam", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam")
)
# LambdaLR / MultiplicativeLR take callables, which a checkpoint cannot hold: left out on purpose.
_SCHEDULERS = tuple(
    f"torch.optim.lr_scheduler.{name}"
    for name in (
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
)

MODULE_TARGETS: set[str] = set(_MODULES)
SAFE_TARGETS: set[str] = set(_MODULES + _BACKBONES + _OPTIMIZERS + _SCHEDULERS)
PLAIN_TYPES = (str, int, float, bool, type(None))

TRUST_HINT = (
    "load only checkpoints from a source you trust; to build it anyway pass --trust-checkpoint "
    "(CLIs) or trust_checkpoint=true (eval.py): DANGEROUS, the file may then run any code it names"
)

# True while clipft builds objects from a file it does not trust (clipft.utils.instantiate checks it)
_UNTRUSTED: contextvars.ContextVar[str | None] = contextvars.ContextVar("clipft_untrusted_source", default=None)


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint names something clipft does not build from files (it could run code)."""


def register_safe_target(path: str, module: bool = False) -> None:
    """Allow ``path`` (``package.module.Class``) in checkpoints; ``module=True``: as a LightningModule.

    For extensions: register your own backbone or method where it is defined, so checkpoints
    of it load without ``trust_checkpoint``. Only register classes whose constructors take data,
    never callables or shell commands.
    """
    SAFE_TARGETS.add(str(path))
    if module:
        MODULE_TARGETS.add(str(path))


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
    from clipft.utils.locate import locate

    return locate(target)
