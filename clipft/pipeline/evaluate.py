"""The evaluation pipeline: any clipft checkpoint on any datamodule -> metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.errors import CheckpointError, ConfigError
from clipft.evaluation.artefacts import write_run_artefacts
from clipft.evaluation.calibration import calibration_report
from clipft.evaluation.inference import loader_predictions, model_preprocessing
from clipft.evaluation.metrics import classification_report
from clipft.methods.loading import load_module
from clipft.pipeline.building import build_datamodule, build_loggers, build_trainer, to_plain
from clipft.pipeline.clip_eval import run_clip_eval, wants_clip_eval
from clipft.pipeline.run_dir import prepare_run_dir
from clipft.pipeline.run_info import run_info
from clipft.pipeline.validation import validate_config
from clipft.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def check_classes(model_classes: list[str], data_classes: list[str], ckpt_path: str) -> None:
    if list(model_classes) == list(data_classes):
        return
    only_model = [c for c in model_classes if c not in data_classes]
    only_data = [c for c in data_classes if c not in model_classes]
    raise CheckpointError(
        f"checkpoint {ckpt_path!r} was trained on different classes than data={data_classes[:3]}...: "
        f"only in checkpoint: {only_model or 'none'}; only in data: {only_data or 'none'}"
        + ("; same classes in another order" if not only_model and not only_data else "")
    )


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    validate_config(cfg, "eval")  # bad values / missing checkpoint: one clear line, before loading
    prepare_run_dir(cfg, "eval")
    if wants_clip_eval(cfg):  # zero-shot (no ckpt_path), zeroshot.template_sets, wise_ft.alphas
        return run_clip_eval(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    model = load_module(cfg.ckpt_path, trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    check_classes(model.class_names, datamodule.class_names, str(cfg.ckpt_path))
    datamodule.configure_preprocessing(**model_preprocessing(model))  # as recorded in the checkpoint
    trainer = build_trainer(cfg, callbacks=[], loggers=build_loggers(cfg))
    trainer.test(model, datamodule=datamodule)
    report = classification_report(model.test_outputs["probs"], model.test_outputs["targets"], datamodule.class_names)
    metrics = {
        "summary": {"test_accuracy": report["accuracy"], "test_macro_f1": report["macro_f1"], "test_ece": report["ece"]},
        "test": report,
        "checkpoint": str(cfg.ckpt_path),
        "data": datamodule.split_report,
        "run": {"output_dir": str(output_dir), **run_info(cfg.paths.get("root_dir"))},
        "config": to_plain(cfg),
    }
    calibration = calibrate(model, datamodule) if cfg.get("calibrate", False) else None
    if calibration:
        metrics["summary"]["test_ece_calibrated"] = calibration["test"]["ece_after"]
        metrics["summary"]["temperature"] = calibration["temperature"]
    gradcam_n = int((cfg.get("gradcam") or {}).get("n", 0) or 0)
    plots = bool(cfg.get("plots", True))
    metrics = write_run_artefacts(output_dir, model, datamodule, metrics, trainer, calibration, gradcam_n, plots)
    atomic_write_json(output_dir / "metrics.json", metrics)
    log.info("test accuracy %.4f, macro-F1 %.4f, ECE %.4f", report["accuracy"], report["macro_f1"], report["ece"])
    if calibration:
        log.info(
            "temperature %.3f: test ECE %.4f -> %.4f",
            calibration["temperature"], calibration["test"]["ece_before"], calibration["test"]["ece_after"],
        )
    return metrics


def calibrate(model, datamodule) -> dict[str, Any]:
    """Temperature scaling fitted on the validation split, ECE/NLL before and after on val and test."""
    if not datamodule.val_samples:
        raise ConfigError("calibrate=true needs a validation split: set data.val_fraction > 0")
    val_probs, val_targets = loader_predictions(model, datamodule.val_dataloader())
    return calibration_report(val_probs, val_targets, model.test_outputs["probs"], model.test_outputs["targets"])
