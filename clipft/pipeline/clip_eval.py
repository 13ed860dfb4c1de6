"""CLIP evaluations of ``eval.py``: zero-shot with no checkpoint, per-template-set accuracy, WiSE-FT sweeps.

    python eval.py model=clip_zeroshot                              # zero-shot, model's prompts
    python eval.py model=clip_zeroshot zeroshot.template_sets=[simple,imagenet80,traffic,blurry]
    python eval.py ckpt_path=RUN/checkpoints/best.ckpt wise_ft.alphas=[0,0.25,0.5,0.75,1.0]

Every variant is scored on the same split (``split=test`` by default, or ``val``) with
:func:`clipft.evaluation.metrics.classification_report`; ``metrics.json`` holds the main
result under ``test`` plus ``zeroshot`` (per template set) and ``wise_ft`` (per alpha) tables.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.errors import ConfigError
from clipft.evaluation.metrics import classification_report
from clipft.methods.loading import load_module
from clipft.methods.wise_ft import wise_ft_sweep
from clipft.pipeline.building import build_datamodule, build_loggers, build_model, build_trainer, to_plain
from clipft.pipeline.run_info import run_info
from clipft.prompts import load_template_set, package_file
from clipft.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("test", "val")


def wants_clip_eval(cfg: DictConfig) -> bool:
    """No checkpoint (zero-shot from ``model=``), a template-set / WiSE-FT sweep, or ``split=val``."""
    return (
        cfg.get("ckpt_path") in (None, "")
        or bool((cfg.get("zeroshot") or {}).get("template_sets"))
        or bool((cfg.get("wise_ft") or {}).get("alphas"))
        or str(cfg.get("split") or "test") != "test"
    )


def template_set_path(name: str) -> Path:
    """``conf/prompts/<name>.yaml`` of the running config tree (or a YAML path given directly)."""
    if name.endswith((".yaml", ".yml")):
        return Path(name).expanduser()
    roots = []
    try:
        from hydra.core.hydra_config import HydraConfig

        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                roots.append(Path(source.path))
    except Exception:  # noqa: BLE001 - not under @hydra.main (tests composing by hand)
        pass
    roots.append(package_file("conf"))
    for root in roots:
        path = root / "prompts" / f"{name}.yaml"
        if path.is_file():
            return path
    available = sorted(p.stem for p in (roots[-1] / "prompts").glob("*.yaml"))
    raise ConfigError(f"zeroshot.template_sets: no template set {name!r}; available: {available}")


def run_clip_eval(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    split = str(cfg.get("split") or "test")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} must be one of {list(SPLITS)}")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        from clipft.pipeline.evaluate import check_classes

        model = load_module(ckpt_path, trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
        check_classes(model.class_names, datamodule.class_names, str(ckpt_path))
    elif cfg.get("model") is not None:
        model = build_model(cfg, datamodule.class_names)
    else:
        raise ConfigError(
            "eval.py needs ckpt_path=RUN/checkpoints/best.ckpt, or a model to score zero-shot "
            "(e.g. model=clip_zeroshot)"
        )
    datamodule.configure_preprocessing(**getattr(model, "preprocessing", {}))
    trainer = build_trainer(cfg, callbacks=[], loggers=build_loggers(cfg))
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()

    def score() -> dict[str, Any]:
        trainer.test(model, dataloaders=loader, verbose=False)
        return classification_report(model.test_outputs["probs"], model.test_outputs["targets"], datamodule.class_names)

    report = score()
    metrics: dict[str, Any] = {
        "summary": {
            f"{split}_accuracy": report["accuracy"],
            f"{split}_macro_f1": report["macro_f1"],
            f"{split}_ece": report["ece"],
        },
        split: report,
    }
    concepts = cfg.get("concepts") or {}
    if concepts.get("map"):  # transfer between sign sets: accuracy on shared / unshared concepts
        from clipft.evaluation.concepts import load_concept_map, shared_class_ids, split_accuracy
        from clipft.prompts import resolve_project_file

        concept_map = load_concept_map(resolve_project_file(str(concepts["map"])))
        shared = shared_class_ids(concept_map, str(concepts.get("dataset")))
        metrics["concepts"] = {"map": str(concepts["map"]), **split_accuracy(report, datamodule.class_names, shared)}
        log.info("%s accuracy on concepts shared with the other set: %s", split, metrics["concepts"]["shared_accuracy"])
    template_sets = list((cfg.get("zeroshot") or {}).get("template_sets") or [])
    if template_sets:
        metrics["zeroshot"] = score_template_sets(model, template_sets, score)
    alphas = list((cfg.get("wise_ft") or {}).get("alphas") or [])
    if alphas:
        metrics["wise_ft"] = {f"{alpha:g}": _brief(score()) for alpha, _ in wise_ft_sweep(model, alphas)}
    metrics.update(
        {
            "checkpoint": str(ckpt_path) if ckpt_path else None,
            "split": split,
            "data": datamodule.split_report,
            "run": {"output_dir": str(output_dir), **run_info(cfg.paths.get("root_dir"))},
            "config": to_plain(cfg),
        }
    )
    atomic_write_json(output_dir / "metrics.json", metrics)
    print_tables(metrics, split)
    return metrics


def score_template_sets(model: Any, names: list[str], score) -> dict[str, dict[str, float]]:
    if not hasattr(model, "set_prompts"):
        raise ConfigError(f"zeroshot.template_sets needs a CLIP model; {type(model).__name__} has no prompts")
    base = dict((getattr(model, "hparams", {}) or {}).get("prompts") or {})
    results = {}
    try:
        for name in names:
            templates = load_template_set(template_set_path(str(name)))
            block = {**base, "templates": templates}
            if not templates and not block.get("descriptions"):
                raise ConfigError(f"template set {name!r} has no templates and the model has no descriptions")
            if block.get("train_prompt") == "description" and not block.get("descriptions"):
                block["train_prompt"] = "first"
            model.set_prompts(block)
            results[str(name)] = {"num_templates": len(templates), **_brief(score())}
    finally:
        model.set_prompts(base)
    return results


def _brief(report: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "ece": report["ece"]}


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
