"""Shared LightningModule base: metrics, evaluation loops, test-prediction capture, optimizers.

Subclasses implement ``forward(images) -> logits``, ``training_step`` and ``named_parameter_groups``;
everything a run reports (val/test accuracy, macro-F1, ECE, per-sample probabilities for
``metrics.json``) lives here so CLIP and CNN modules are evaluated identically.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.parsing import save_hyperparameters
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score

from clipft.errors import ConfigError
from clipft.methods.distributed import gather_test_outputs
from clipft.methods.fast_path import with_fused_optimizer
from clipft.methods.optim import build_optimizer, build_scheduler, param_groups

ECE_BINS = 15


def eval_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy (top-1), macro-F1 and 15-bin ECE: the numbers every run reports."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro"),
            "ece": MulticlassCalibrationError(num_classes=num_classes, n_bins=ECE_BINS, norm="l1"),
        },
        prefix=prefix,
    )


class ClassificationModule(L.LightningModule):
    """Base for every clipft classifier; batches are ``(images, labels)``.

    Every subclass is registered as a module checkpoints may name (:mod:`clipft.utils.safe_targets`)
    when its file is imported, unless declared with ``abstract=True``: a new method is one file.
    """

    #: the base constructor's arguments a method takes through ``*args``/``**kwargs`` and passes on unchanged (its
    #: own arguments are keyword-only in its ``__init__``): hyper-parameters too, with their defaults when not given
    passes_on: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if passes_on(cls):
            cls.__signature__ = full_signature(cls)
        elif "__init__" in vars(cls):
            cls.__signature__ = None  # its own explicit __init__, not a parent's full signature
        if abstract:
            return
        from clipft.utils.safe_targets import register_safe_target

        register_safe_target(module_class_path(cls), module=True)
        if cls.__module__.startswith("clipft.methods."):
            register_safe_target(f"clipft.methods.{cls.__qualname__}", module=True)  # the package-level name

    def __new__(cls, *args: Any, **kwargs: Any) -> ClassificationModule:
        """Refuse an argument the method does not take before any constructor runs (``passes_on``: a method
        that fixes a base argument would otherwise fail with a bare TypeError)."""
        if passes_on(cls):
            try:
                inspect.signature(cls).bind_partial(*args, **kwargs)
            except TypeError as exc:
                raise ConfigError(f"{cls.__name__}: {exc}; it takes {list(inspect.signature(cls).parameters)}") from None
        return super().__new__(cls)

    def __init__(
        self,
        class_names: Sequence[str],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        # the concrete class's constructor arguments, recorded once here for every subclass: what a
        # checkpoint rebuilds the module from (``hyper_parameters``); subclasses do not call this themselves
        frame = _outermost_init_frame(self, inspect.currentframe())
        save_hyperparameters(self, frame=frame, given_hparams=_init_arguments(self, frame))
        if isinstance(class_names, (str, bytes)) or not class_names or len(class_names) < 2:
            raise ConfigError(f"a classifier needs a list of at least 2 class names, got {class_names!r}")
        not_text = [n for n in class_names if not isinstance(n, str)]
        if not_text:
            raise ConfigError(f"class_names must be strings (they go into prompts and reports), got {not_text[:3]!r}")
        # the concrete class's own arguments, with what this base uses (a method may pass a default optimizer)
        type(self).check_arguments({**dict(self.hparams), "optimizer": optimizer or {}, "label_smoothing": label_smoothing})
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.optimizer_config = dict(optimizer)
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.label_smoothing = float(label_smoothing)
        self.val_metrics = eval_metrics(self.num_classes, "val/")
        self.test_metrics = eval_metrics(self.num_classes, "test/")
        self.test_outputs: dict[str, torch.Tensor] = {}
        self._test_probs: list[torch.Tensor] = []
        self._test_targets: list[torch.Tensor] = []

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` naming the first bad constructor argument (``optimizer.lr=-1 is not allowed:
        expected ...``). Every value is checked here, once: the constructor calls it with its arguments, and the
        pipeline with the config's ``model`` node before anything is built (a typo fails in a second, not after the
        data scan). Absent or null arguments are skipped; a method with arguments of its own extends it."""
        optimizer = arguments.get("optimizer")
        if isinstance(optimizer, Mapping):
            lr = optimizer.get("lr")
            if not _number(lr) or lr <= 0:
                raise ConfigError(f"optimizer.lr={lr!r} is not allowed: expected a positive number, e.g. 1e-4")
            weight_decay = optimizer.get("weight_decay")
            if weight_decay is not None and (not _number(weight_decay) or weight_decay < 0):
                raise ConfigError(f"optimizer.weight_decay={weight_decay!r} is not allowed: expected a number >= 0")
        label_smoothing = arguments.get("label_smoothing")
        if label_smoothing is not None and (not _number(label_smoothing) or not 0 <= label_smoothing < 1):
            raise ConfigError(f"label_smoothing={label_smoothing!r} is not allowed: expected a number in [0, 1)")

    # ------------------------------------------------------------------ to implement
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_for_inference(self) -> None:
        """Compute what every prediction reuses (a CLIP method's class text); the pipeline's loops and
        the CLIs call it before predicting. Nothing to do for a plain classifier."""

    def inference_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]] | None:
        """``(module path, hyper-parameters, state dict)`` of a simpler module that predicts the same
        (PEFT: the adapter merged), written by the pipeline as ``checkpoints/inference.ckpt``; None: nothing to export."""
        return None

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(weight C x D, bias C)`` with ``logits = encode_image(x) @ weight.T + bias`` on the backbone's
        normalised image embedding, after :meth:`prepare_for_inference`; None when the classifier is not one
        linear map of that embedding (a cache, an adapter, an ensemble). What ``clipft-export --format hf|open_clip``
        ships beside the backbone; the exporter checks it against ``forward``."""
        return None

    def named_parameter_groups(self) -> dict[str, Iterable[tuple[str, nn.Parameter]]]:
        """Parts of the model that may get their own LR: ``{part: named_parameters}``."""
        return {"model": self.named_parameters()}

    def part_learning_rates(self) -> dict[str, float | None]:
        return {}

    # ------------------------------------------------------------------ shared steps
    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        logits = self(images).float()
        loss = F.cross_entropy(logits, labels)
        self.val_metrics.update(logits.softmax(dim=-1), labels)
        self.log("val/loss", loss, on_epoch=True, prog_bar=False, batch_size=len(labels), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self._test_probs, self._test_targets = [], []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch[0], batch[1]
        logits = self(images).float()
        probs = logits.softmax(dim=-1)
        self.test_metrics.update(probs, labels)
        self.log("test/loss", F.cross_entropy(logits, labels), on_epoch=True, batch_size=len(labels), sync_dist=True)
        self._test_probs.append(probs.detach().cpu())
        self._test_targets.append(labels.detach().cpu())

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()
        if self._test_probs:
            self.test_outputs = {
                "probs": torch.cat(self._test_probs),
                "targets": torch.cat(self._test_targets),
            }
            self.test_outputs = gather_test_outputs(self, self.test_outputs)  # DDP: whole test set, once each

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).float().softmax(dim=-1)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which class to rebuild, so a checkpoint alone is enough to load the model."""
        checkpoint["clipft"] = self.checkpoint_record(module_class_path(self))
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = plain_containers(checkpoint["hyper_parameters"])

    def checkpoint_record(self, module_path: str) -> dict[str, Any]:
        """``checkpoint["clipft"]``: the class to rebuild, the version, and the preprocessing predict/ask replay."""
        import clipft

        record: dict[str, Any] = {"module": module_path, "version": clipft.__version__}
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "preprocessing"):
            record["preprocessing"] = dict(datamodule.preprocessing)
            record["eval_transform"] = getattr(datamodule, "eval_transform_name", "clip_eval")
        return record

    # ------------------------------------------------------------------ optimisation
    @property
    def lr(self) -> float:
        """The base learning rate, ``optimizer.lr``: what Lightning's ``LearningRateFinder`` reads and sets.

        Parts with a rate of their own (``learning_rates``) keep it; the finder tunes the base rate.
        """
        return float(self.optimizer_config["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer_config["lr"] = float(value)
        optimizer_hparams = self.hparams.get("optimizer") if hasattr(self, "hparams") else None
        if isinstance(optimizer_hparams, dict):  # checkpoints record the rate actually used
            optimizer_hparams["lr"] = float(value)

    def configure_optimizers(self) -> Any:
        cfg = dict(self.optimizer_config)
        lr = cfg["lr"]  # checked by the constructor
        groups = param_groups(
            self.named_parameter_groups(),
            self.part_learning_rates(),
            base_lr=float(lr),
            weight_decay=float(cfg.pop("weight_decay", 0.0)),
        )
        optimizer = build_optimizer(with_fused_optimizer(cfg, self.device), groups)  # fused AdamW on CUDA
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        scheduler = build_scheduler(self.scheduler_config, optimizer, int(total))
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _outermost_init_frame(module: L.LightningModule, frame: types.FrameType | None) -> types.FrameType | None:
    """The frame of the outermost ``__init__`` running on ``module``: the concrete class's constructor, whose
    arguments (as it received them) are the module's hyper-parameters. None: the caller's frame (Lightning's default)."""
    found = None
    while frame is not None and frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is module:
        found, frame = frame, frame.f_back
    return found


def _init_arguments(module: L.LightningModule, frame: types.FrameType | None) -> dict[str, Any] | None:
    """The concrete class's constructor arguments: those its ``__init__`` names and, bound to its full signature
    (:func:`full_signature`), those it passes on, with their defaults when not given. None: Lightning's default
    (no constructor frame, or a class without ``passes_on``: its named arguments and ``**kwargs``)."""
    if frame is None or not passes_on(type(module)):
        return None
    names, varargs, varkw, values = inspect.getargvalues(frame)
    own = {n: values[n] for n in names if n != "self"}
    passed = inspect.signature(type(module)).bind_partial(*values.get(varargs, ()), **values.get(varkw, {}))  # checked: __new__
    passed.apply_defaults()
    return {**{k: v for k, v in passed.arguments.items() if k not in own}, **own}


def passes_on(cls: type) -> tuple[str, ...]:
    """The ``passes_on`` of the class whose ``__init__`` ``cls`` runs (a subclass with its own explicit
    ``__init__`` does not inherit its parent's)."""
    owner = next(b for b in cls.__mro__ if "__init__" in vars(b))
    names = vars(owner).get("passes_on", ())
    if isinstance(names, str):
        raise TypeError(f"{owner.__qualname__}.passes_on must be a tuple of argument names, not the string {names!r}")
    return tuple(names)


def full_signature(cls: type) -> inspect.Signature:
    """``cls(...)``'s signature: its ``__init__``'s own arguments (keyword-only) and the ``passes_on`` arguments as
    the nearest base constructor declares them (what ``inspect.signature``, the checkpoint checks and help show)."""
    own = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"
           and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    parent = next(b for b in cls.__mro__[1:] if "__init__" in vars(b))
    parameters = vars(parent)["__signature__"].parameters if vars(parent).get("__signature__") else {
        n: p for n, p in inspect.signature(parent.__init__).parameters.items() if n != "self"}
    names = passes_on(cls)
    base = [p for p in parameters.values() if p.name in names]
    missing = sorted(set(names) - {p.name for p in base})
    if missing:
        raise TypeError(f"{cls.__qualname__}.passes_on names {missing}, which {parent.__qualname__} does not take")
    positional = 0  # the leading base arguments ``*args`` still reaches by position
    for p in parameters.values():
        if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD or p.name not in names:
            break
        positional += 1
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in base[positional:]]
    return inspect.Signature([*base[:positional], *rest, *own], return_annotation=None)


def plain_containers(obj: Any) -> Any:
    """dict/list/str/number only, so checkpoints load with ``torch.load(weights_only=True)``."""
    if hasattr(obj, "_metadata") and type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {k: plain_containers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_containers(v) for v in obj]
    return obj


def module_class_path(module: L.LightningModule | type) -> str:
    cls = module if isinstance(module, type) else type(module)
    return f"{cls.__module__}.{cls.__qualname__}"
