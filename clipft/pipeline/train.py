"""The training pipeline: data -> model -> fit -> test on the best checkpoint -> metrics.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from clipft.data.base import wire
from clipft.errors import CheckpointError, ConfigError
from clipft.evaluation.artefacts import write_run_artefacts
from clipft.evaluation.headline import headline_summary
from clipft.evaluation.metrics import classification_report
from clipft.evaluation.wandb_media import log_run_files, log_run_record
from clipft.pipeline.building import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_model,
    build_trainer,
    to_plain,
    trainer_for_test,
)
from clipft.pipeline.class_transfer import add_novel_scores, dataset_classes
from clipft.pipeline.eval_targets import score_eval_targets
from clipft.pipeline.run_dir import prepare_run_dir
from clipft.pipeline.run_info import run_info
from clipft.pipeline.validation import validate_config
from clipft.utils.io import atomic_write_json, atomic_write_text
from clipft.utils.paths import is_inside
from clipft.utils.quiet_logs import quiet_library_logs

log = logging.getLogger(__name__)


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test one run; returns the metrics dict that is also written to ``metrics.json``."""
    quiet_library_logs()  # Lightning's lines once, in train.log too; no vendor tips
    started = time.time()
    validate_config(cfg, "train")  # bad values: one clear line, before anything is built
    # ckpt_path=last: continue in that run's directory (same experiment only)
    run_dir = prepare_run_dir(cfg, "train")
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    datamodule, model = data_and_model(cfg, run_dir, output_dir)

    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer = build_trainer(cfg, callbacks, loggers)
    for lg in loggers:
        lg.log_hyperparams(to_plain(cfg))
    record = run_info(cfg.paths.get("root_dir"), model)  # before fit: trainable = what the run starts training
    log_run_record(loggers, record)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics: dict[str, Any] = {"summary": {}, "data": datamodule.split_report, **best_checkpoint(cfg, trainer, output_dir)}
    if cfg.get("test", True):
        tested = score_best_checkpoint(cfg, trainer, model, datamodule, metrics.get("best_checkpoint"), output_dir)
        metrics["summary"].update(tested.pop("summary", {}))
        metrics.update(tested)
    metrics["epochs_trained"] = int(trainer.current_epoch)
    metrics["duration_s"] = round(time.time() - started, 2)
    metrics["run"] = {"output_dir": str(output_dir), **record}
    metrics["config"] = to_plain(cfg)
    if not trainer.is_global_zero:
        return metrics  # DDP child rank: rank 0 writes the run's files
    # data.classes=base: the novel classes too, with the retargeted module (clipft.pipeline.class_transfer)
    metrics = add_novel_scores(metrics, model, datamodule, trainer.strategy.root_device)
    add_eval_targets(cfg, metrics, loggers, output_dir)
    # history, plots/ (unless plots=false), errors.csv
    metrics = write_run_artefacts(output_dir, model, datamodule, metrics, trainer, plots=bool(cfg.get("plots", True)))
    atomic_write_json(output_dir / "metrics.json", metrics)
    log.info("metrics written to %s", output_dir / "metrics.json")
    log_run_files(loggers, output_dir)  # metrics.json + data_report.json as the W&B run's report artifact
    return metrics


def data_and_model(cfg: DictConfig, run_dir: Any, output_dir: Path) -> tuple[Any, Any]:
    """The datamodule (set up for fit) and the model wired to it; the run's config and data reports written."""
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    run_dir.check_classes(list(datamodule.class_names))  # before the run's record is rewritten
    check_has_validation(cfg, datamodule)
    run_dir.begin()  # only now is a resumed run's directory touched
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    datamodule.write_reports(output_dir)  # data_report.json (+ skipped_images.txt)
    model = build_model(cfg, datamodule.class_names, dataset_classes(datamodule))
    if cfg.get("init_from"):
        from clipft.pipeline.warm_start import init_weights_from

        init_weights_from(model, cfg.init_from, trust=bool(cfg.get("trust_checkpoint", False)))
    wire(datamodule, model)  # the model's image size/mean/std where the config left them null
    return datamodule, model


def best_checkpoint(cfg: DictConfig, trainer: L.Trainer, output_dir: Path) -> dict[str, Any]:
    """``{"summary": {best_<monitor>: score}, "best_checkpoint": path}`` (empty without a checkpoint callback)."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return {}
    best_path = callback.best_model_path
    if best_path and not is_inside(best_path, output_dir):
        # restored from a resumed checkpoint's callback state: never load a file from elsewhere
        raise CheckpointError(
            f"the best checkpoint recorded for this run, {best_path!r}, lies outside the run directory "
            f"{str(output_dir)!r}; the resumed checkpoint {cfg.get('ckpt_path')!r} may have been tampered with"
        )
    score = callback.best_model_score
    return {"summary": {"best_" + callback.monitor.replace("/", "_"): float(score) if score is not None else None},
            "best_checkpoint": best_path or None}


def score_best_checkpoint(cfg: DictConfig, trainer: L.Trainer, model: Any, datamodule: Any, best_path: str | None,
              output_dir: Path) -> dict[str, Any]:
    """The best checkpoint's test report (``test`` and the headline ``summary``), and its inference checkpoint."""
    # ddp_spawn: test on one device in this process (clipft.pipeline.building.trainer_for_test)
    trainer_for_test(trainer, cfg).test(model, datamodule=datamodule, ckpt_path=best_path or None)
    out: dict[str, Any] = {}
    if model.test_outputs:
        report = classification_report(model.test_outputs["probs"], model.test_outputs["targets"], datamodule.class_names)
        out["test"] = report
        out["summary"] = headline_summary(report, "test")
    exported = model.inference_export()  # e.g. a PEFT adapter merged into the tested (best) weights
    if exported is not None and trainer.is_global_zero:
        out["inference_checkpoint"] = str(write_inference_checkpoint(model, exported, output_dir))
    return out


def add_eval_targets(cfg: DictConfig, metrics: dict[str, Any], loggers: list[Any], output_dir: Path) -> None:
    """``eval_targets=[...]``: the best checkpoint scored on other datasets (clipft.pipeline.eval_targets)."""
    transfer = score_eval_targets(cfg, metrics.get("best_checkpoint"), output_dir)
    if not transfer:
        return
    metrics["summary"]["transfer"] = {**metrics["summary"].get("transfer", {}), **transfer}
    for logger in loggers:  # beside the run's test numbers on the dashboard
        logger.log_metrics({f"transfer/{name}/accuracy": result["accuracy"] for name, result in transfer.items()})


def write_inference_checkpoint(model: Any, exported: tuple[str, dict[str, Any], dict[str, Any]], output_dir: Path) -> Path:
    """``checkpoints/inference.ckpt``: the module's inference form, loadable like any checkpoint (atomic write)."""
    from clipft.methods.classification import plain_containers
    from clipft.utils.checkpoint_io import write_checkpoint

    module_path, hparams, state_dict = exported
    record = {"state_dict": state_dict, "hyper_parameters": plain_containers(hparams), "clipft": model.checkpoint_record(module_path)}
    return write_checkpoint(record, output_dir / "checkpoints" / "inference.ckpt")


def check_has_validation(cfg: DictConfig, datamodule: Any) -> None:
    """Early stopping and the best checkpoint watch val metrics: an empty val split would end in a
    Lightning trace after the first epoch, so refuse up front with the fix."""
    val = getattr(datamodule, "val_samples", None)
    if not cfg.get("train", True) or val is None or len(val) > 0:
        return
    report = getattr(datamodule, "split_report", {}) or {}
    raise ConfigError(
        f"the validation split is empty (data.val_fraction={OmegaConf.select(cfg, 'data.val_fraction', default=None)}, "
        f"{report.get('train', '?')} training images in {report.get('num_classes', '?')} classes; a class needs "
        "at least 2 distinct images to give one to val): the best checkpoint and early stopping need val "
        "metrics. Set data.val_fraction=0.1 (or higher), or give a val split (data.val_list=FILE)"
    )


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The number a Hydra sweeper maximises: ``cfg.optimized_metric`` looked up in the summary."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = metrics.get("summary", {}).get(name)
    return float(value) if value is not None else None
