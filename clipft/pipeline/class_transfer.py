"""A trained module scored on classes other than its own: base-to-novel and cross-dataset transfer.

Base-to-novel (CoCoOp's protocol, ``data.classes=base``): after the normal test on the base classes,
:func:`add_novel_scores` retargets the tested module to the novel classes
(:func:`clipft.methods.retarget.retarget`), scores the novel test split and writes
``summary.test_accuracy_base``, ``summary.test_accuracy_novel`` and their harmonic mean ``summary.test_hm``
(and the full novel report as ``test_novel``) into ``metrics.json``.

Cross-dataset / domain shift (``eval.py ckpt_path=RUN/... data=OTHER``; with other classes add
``retarget=true``): :func:`transfer_summary` writes ``summary.transfer = {<data config>: {"accuracy", "classes"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from clipft.errors import ConfigError

log = logging.getLogger(__name__)


def dataset_classes(datamodule: Any) -> list[str] | None:
    """The dataset's whole class list when the run keeps a subset of it (``data.classes=base|novel``), else None."""
    index = getattr(datamodule, "index", None)
    every = list(getattr(index, "class_names", None) or [])
    return every if every and every != list(datamodule.class_names) else None


def harmonic_mean(a: float, b: float) -> float:
    """CoCoOp's H: ``2ab / (a + b)`` (0 when both are 0)."""
    return 2.0 * a * b / (a + b) if a + b > 0 else 0.0


def score(model: Any, loader: Any, class_names: list[str], device: Any = None) -> dict[str, Any]:
    """The classification report of ``model`` over ``loader`` (no Trainer: nothing is logged as the run's test)."""
    from clipft.evaluation.inference import loader_predictions
    from clipft.evaluation.metrics import classification_report

    if device is not None:
        model.to(device)
    with torch.no_grad():
        probs, targets = loader_predictions(model, loader)
    return classification_report(probs, targets, class_names)


def add_novel_scores(metrics: dict[str, Any], model: Any, datamodule: Any, device: Any = None) -> dict[str, Any]:
    """With ``data.classes=base`` and a test report: the novel classes scored by the retargeted module, and
    ``summary.test_accuracy_base / test_accuracy_novel / test_hm``. Anything else: ``metrics`` unchanged."""
    held_out = getattr(datamodule, "held_out", None)
    if getattr(datamodule, "classes", "all") != "base" or held_out is None or "test" not in metrics:
        return metrics
    from clipft.methods.retarget import retarget

    try:
        novel_model = retarget(model, held_out.class_names)
    except ConfigError as exc:  # e.g. class-specific context: the trained run keeps its files, the reason is recorded
        log.warning("the novel classes cannot be scored: %s", exc)
        metrics["test_novel"] = {"error": str(exc)}
        metrics["summary"].update({"test_accuracy_base": float(metrics["test"]["accuracy"]), "test_accuracy_novel": None,
                                   "test_hm": None})
        return metrics
    report = score(novel_model, datamodule.held_out_dataloader(), held_out.class_names, device)
    base, novel = float(metrics["test"]["accuracy"]), float(report["accuracy"])
    metrics["test_novel"] = report
    metrics["summary"].update(
        {"test_accuracy_base": base, "test_accuracy_novel": novel, "test_hm": harmonic_mean(base, novel)}
    )
    log.info("base-to-novel: base %.4f, novel %.4f (%d classes), H %.4f", base, novel, len(held_out.class_names),
             metrics["summary"]["test_hm"])
    return metrics


def model_for_classes(model: Any, class_names: list[str]) -> Any:
    """A loaded checkpoint's module for the data's classes (``retarget=true``): itself when they match, else retargeted."""
    if list(model.class_names) == list(class_names):
        return model
    from clipft.methods.retarget import retarget

    log.info("retargeting %s from %d to %d classes (clipft.methods.retarget)", type(model).__name__, len(model.class_names),
             len(class_names))
    return retarget(model, class_names)


def chosen_data(overrides: list[str]) -> str | None:
    """The data config the command line chose (``data=NAME``), or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group.lstrip("+") == "data" and not override.is_delete():
            return str(override.value())
    return None


def transfer_summary(cfg: Any, report: dict[str, Any], class_names: list[str], overrides: list[str] | None = None) -> dict[str, Any]:
    """``{"transfer": {<data config>: {"accuracy", "classes"}}}`` for a checkpoint scored on another dataset
    config (``data=NAME`` on the command line) or on other classes (``retarget=true``); else ``{}``.

    The key is the data config's name (``data.classes=novel`` adds ``/novel``)."""
    if not cfg.get("ckpt_path"):
        return {}
    if overrides is None:
        from clipft.pipeline.run_data import command_line_overrides

        overrides = command_line_overrides()
    name = chosen_data(overrides)
    if name is None and not cfg.get("retarget", False):
        return {}
    if name is None:
        name = str((cfg.get("data") or {}).get("_target_", "data")).rsplit(".", 1)[-1]
    classes = (cfg.get("data") or {}).get("classes", "all") or "all"
    key = name if classes == "all" else f"{name}/{classes}"
    return {"transfer": {key: {"accuracy": float(report["accuracy"]), "classes": len(class_names)}}}
