"""The evaluation pipeline: any clipft checkpoint on any datamodule -> metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.errors import CheckpointError
from clipft.evaluation.metrics import classification_report
from clipft.modules.loading import load_module
from clipft.pipeline.building import build_datamodule, build_loggers, build_trainer, to_plain
from clipft.pipeline.run_info import run_info
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
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    model = load_module(cfg.ckpt_path)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    check_classes(model.class_names, datamodule.class_names, str(cfg.ckpt_path))
    datamodule.configure_preprocessing(**getattr(model, "preprocessing", {}))
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
    atomic_write_json(output_dir / "metrics.json", metrics)
    log.info("test accuracy %.4f, macro-F1 %.4f, ECE %.4f", report["accuracy"], report["macro_f1"], report["ece"])
    return metrics
