"""The one evaluation pipeline: any checkpoint or zero-shot model, any split -> metrics.json.

    python eval.py ckpt_path=RUN/checkpoints/best.ckpt [split=val] [calibrate=true] [gradcam.n=16]
    python eval.py model=clip_zeroshot                                   # zero-shot, no checkpoint
    python eval.py ... zeroshot.template_sets=[simple,imagenet80,traffic,blurry]
    python eval.py ckpt_path=... wise_ft.alphas=[0,0.25,0.5,0.75,1.0]

Every option is honoured on every split and method: the main report of ``split`` (test or val)
with its headline summary (:mod:`clipft.evaluation.headline`), the concept split, one row per
template set, one per WiSE-FT alpha, temperature scaling fitted on val, plots, ``errors.csv`` and
the Grad-CAM grid of the evaluated split.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.data.base import wire
from clipft.errors import CheckpointError, ConfigError
from clipft.evaluation.artefacts import write_run_artefacts
from clipft.evaluation.calibration import calibration_report
from clipft.evaluation.feature_pass import FeaturePass
from clipft.evaluation.headline import headline_summary
from clipft.evaluation.inference import loader_predictions
from clipft.evaluation.metrics import classification_report
from clipft.evaluation.template_sets import brief, score_template_sets
from clipft.evaluation.tpt import tpt_evaluate
from clipft.evaluation.wandb_media import log_run_files, log_run_record
from clipft.methods.loading import load_module
from clipft.methods.wise_ft import wise_ft_sweep
from clipft.pipeline.building import build_datamodule, build_loggers, build_model, build_trainer, to_plain
from clipft.pipeline.class_transfer import dataset_classes, model_for_classes, transfer_summary
from clipft.pipeline.run_data import with_data_of_checkpoint_run
from clipft.pipeline.run_dir import prepare_run_dir
from clipft.pipeline.run_info import run_info
from clipft.pipeline.validation import validate_config
from clipft.utils.io import atomic_write_json, atomic_write_text
from clipft.utils.quiet_logs import quiet_library_logs

log = logging.getLogger(__name__)

SPLITS = ("test", "val")


def check_classes(model_classes: list[str], data_classes: list[str], ckpt_path: str) -> None:
    if list(model_classes) == list(data_classes):
        return
    only_model = [c for c in model_classes if c not in data_classes]
    only_data = [c for c in data_classes if c not in model_classes]
    raise CheckpointError(
        f"checkpoint {ckpt_path!r} was trained on different classes than data={data_classes[:3]}...: "
        f"only in checkpoint: {only_model or 'none'}; only in data: {only_data or 'none'}"
        + ("; same classes in another order" if not only_model and not only_data else "")
        + "; to score it on these classes (cross-dataset, base-to-novel), pass retarget=true"
    )


def sweep_points(cfg: DictConfig) -> dict[str, list[Any]]:
    """The evaluation sweeps asked for: ``{"template_sets": [...], "wise_ft": [alphas]}`` (empty ones left out)."""
    points = {
        "template_sets": list((cfg.get("zeroshot") or {}).get("template_sets") or []),
        "wise_ft": list((cfg.get("wise_ft") or {}).get("alphas") or []),
    }
    return {name: values for name, values in points.items() if values}


def score_sweeps(model: Any, sweeps: dict[str, list[Any]], score: Any, feature_pass: FeaturePass) -> dict[str, Any]:
    """``{"zeroshot": per template set, "wise_ft": per alpha}``, each a re-scoring of the same split."""
    metrics: dict[str, Any] = {}
    if "template_sets" in sweeps:
        metrics["zeroshot"] = score_template_sets(model, sweeps["template_sets"], score, hydra_config_roots())
    if "wise_ft" in sweeps:
        metrics["wise_ft"] = {}
        for alpha, _ in wise_ft_sweep(model, sweeps["wise_ft"]):
            feature_pass.weights_changed()  # a tower the interpolation moved recomputes; an unchanged one is reused
            metrics["wise_ft"][f"{alpha:g}"] = brief(score())
    metrics["feature_pass"] = {"image_batches_computed": feature_pass.computed, "image_batches_reused": feature_pass.reused}
    log.info("evaluation sweeps: %d image-tower batches computed, %d reused", feature_pass.computed, feature_pass.reused)
    return metrics


def run_eval(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Score a checkpoint or a zero-shot model on one split; ``overrides``: the command line's (default: the
    running Hydra app's), which say whether the data was chosen (else the checkpoint's run's is used)."""
    quiet_library_logs()
    validate_config(cfg, "eval")  # bad values / missing checkpoint: one clear line, before loading
    split = str(cfg.get("split") or "test")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} must be one of {list(SPLITS)}")
    cfg = with_data_of_checkpoint_run(cfg, overrides)  # no data= on the command line: the checkpoint's run's data
    prepare_run_dir(cfg, "eval")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    datamodule, model = data_and_model(cfg)
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, callbacks=[], loggers=loggers)
    record = run_info(cfg.paths.get("root_dir"), model)
    log_run_record(loggers, record)
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()

    def score() -> dict[str, Any]:
        trainer.test(model, dataloaders=loader, verbose=False)
        return classification_report(model.test_outputs["probs"], model.test_outputs["targets"], datamodule.class_names)

    sweeps = sweep_points(cfg)
    feature_pass = FeaturePass(model) if sweeps else contextlib.nullcontext()
    with feature_pass:  # the sweeps' passes reuse this pass's image embeddings where the tower is unchanged
        report = score()
        main_outputs = dict(model.test_outputs)  # the sweeps below overwrite test_outputs
        metrics_of_sweeps = score_sweeps(model, sweeps, score, feature_pass) if sweeps else {}
    ckpt_path = cfg.get("ckpt_path")
    metrics: dict[str, Any] = {"summary": headline_summary(report, split), split: report}
    metrics["summary"].update(transfer_summary(cfg, report, datamodule.class_names, overrides))  # another dataset / classes
    metrics.update(concept_scores(cfg, report, datamodule.class_names, split))
    metrics.update(metrics_of_sweeps)
    model.test_outputs = main_outputs
    if (cfg.get("tpt") or {}).get("enabled", False):  # test-time prompt tuning, one image at a time (clipft.evaluation.tpt)
        metrics["tpt"] = tpt_evaluate(model, loader, cfg.tpt, int(cfg.get("seed") or 0), trainer.strategy.root_device)
        metrics["summary"]["tpt_accuracy"] = metrics["tpt"]["accuracy"]
    calibration = calibrate(model, datamodule, split) if cfg.get("calibrate", False) else None
    if calibration:
        metrics["summary"][f"{split}_ece_calibrated"] = calibration[split]["ece_after"]
        metrics["summary"]["temperature"] = calibration["temperature"]
    metrics.update(
        {
            "checkpoint": str(ckpt_path) if ckpt_path else None,
            "split": split,
            "data": datamodule.split_report,
            "run": {"output_dir": str(output_dir), **record},
            "config": to_plain(cfg),
        }
    )
    gradcam_n = int((cfg.get("gradcam") or {}).get("n", 0) or 0)
    metrics = write_run_artefacts(
        output_dir, model, datamodule, metrics, trainer, calibration, gradcam_n, bool(cfg.get("plots", True)), split=split
    )
    atomic_write_json(output_dir / "metrics.json", metrics)
    log_run_files(loggers, output_dir)
    print_tables(metrics, split)
    if calibration:
        log.info("temperature %.3f: %s ECE %.4f -> %.4f", calibration["temperature"], split,
                 calibration[split]["ece_before"], calibration[split]["ece_after"])
    return metrics


def data_and_model(cfg: DictConfig) -> tuple[Any, Any]:
    """The datamodule (set up for test) and the checkpoint's (or the configured) model wired to it."""
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    model = load_or_build_model(cfg, datamodule.class_names, dataset_classes(datamodule))
    wire(datamodule, model)  # the preprocessing recorded in the checkpoint
    return datamodule, model


def concept_scores(cfg: DictConfig, report: dict[str, Any], class_names: list[str], split: str) -> dict[str, Any]:
    """``concepts.map=...``: accuracy on the concepts shared with another sign set, and on the rest ({} without)."""
    concepts = cfg.get("concepts") or {}
    if not concepts.get("map"):
        return {}
    from clipft.evaluation.concepts import load_concept_map, shared_class_ids, split_accuracy
    from clipft.prompts import resolve_project_file

    concept_map = load_concept_map(resolve_project_file(str(concepts["map"])))
    shared = shared_class_ids(concept_map, str(concepts.get("dataset")))
    scores = {"map": str(concepts["map"]), **split_accuracy(report, class_names, shared)}
    log.info("%s accuracy on concepts shared with the other set: %s", split, scores["shared_accuracy"])
    return {"concepts": scores}


def load_or_build_model(cfg: DictConfig, class_names: list[str], all_classes: list[str] | None = None) -> Any:
    """The checkpoint's module (classes checked), else the configured model untrained (zero-shot)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        model = load_module(ckpt_path, trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
        if not cfg.get("retarget", False):
            check_classes(model.class_names, list(class_names), str(ckpt_path))
        return model_for_classes(model, list(class_names))  # retarget=true: scored on the data's classes (clipft.methods.retarget)
    if cfg.get("model") is not None:
        return build_model(cfg, list(class_names), all_classes)
    raise ConfigError(
        "eval.py needs ckpt_path=RUN/checkpoints/best.ckpt, or a model to score zero-shot (e.g. model=clip_zeroshot)"
    )


def calibrate(model: Any, datamodule: Any, split: str = "test") -> dict[str, Any]:
    """Temperature scaling fitted on the validation split; ECE/NLL before and after on val and ``split``.

    With ``split=val`` the temperature is fitted and reported on the same images: an optimistic number.
    """
    if not datamodule.val_samples:
        raise ConfigError("calibrate=true needs a validation split: set data.val_fraction > 0")
    val_probs, val_targets = loader_predictions(model, datamodule.val_dataloader())
    report = calibration_report(val_probs, val_targets, model.test_outputs["probs"], model.test_outputs["targets"])
    if split != "test":  # calibration_report names the scored split "test"
        report[split] = report.pop("test")
        report["note"] = "fitted and scored on the validation split: optimistic"
    return report


def hydra_config_roots() -> list[Path]:
    """The running Hydra app's config folders (user template sets win over the packaged ones)."""
    roots: list[Path] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                roots.append(Path(source.path))
    except Exception as exc:  # noqa: BLE001 - not under @hydra.main (tests composing by hand): packaged sets only
        log.debug("no Hydra config sources (%s)", exc)
    return roots


def print_tables(metrics: dict[str, Any], split: str) -> None:
    """A rich table per sweep (template sets, WiSE-FT alphas) on the console and in the log."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for key, title, label in (("zeroshot", "zero-shot per template set", "template set"), ("wise_ft", "WiSE-FT", "alpha")):
        rows = metrics.get(key)
        if not rows:
            continue
        table = Table(title=f"{title} ({split})")
        for col in (label, "accuracy", "macro-F1", "ECE"):
            table.add_column(col)
        for name, row in rows.items():
            table.add_row(name, f"{row['accuracy']:.4f}", f"{row['macro_f1']:.4f}", f"{row['ece']:.4f}")
            log.info("%s %s: accuracy %.4f macro-F1 %.4f ECE %.4f", key, name, row["accuracy"], row["macro_f1"], row["ece"])
        console.print(table)
    s = metrics["summary"]
    log.info("%s accuracy %.4f, macro-F1 %.4f, ECE %.4f", split, s[f"{split}_accuracy"], s[f"{split}_macro_f1"], s[f"{split}_ece"])
