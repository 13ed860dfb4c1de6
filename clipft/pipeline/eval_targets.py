"""A trained run scored on other datasets right after its test (``eval_targets=[...]``).

Cross-dataset transfer and domain generalisation train once and test the unchanged model on other
datasets (CoCoOp's Table 2, CoOp's ImageNet -> V2/Sketch/A/R). With ``eval_targets=[caltech101, dtd]`` the
training run evaluates its best checkpoint on each named data config as
``eval.py ckpt_path=<best> data=<target> retarget=true`` would, into ``<run>/transfer/<target>/`` (its own
metrics.json and plots), and adds ``summary.transfer[<target>] = {accuracy, classes}`` to the run's metrics:
what ``python -m clipft.results --protocol cross_dataset`` reads. A target may also be a mapping
``{data: NAME, overrides: ["data.root=/elsewhere", ...]}`` for a dataset kept somewhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from clipft.errors import ConfigError

log = logging.getLogger(__name__)

# values of the training run that its evaluations keep (resolved: an evaluation composed in-process has no
# Hydra runtime to resolve ${hydra:...} against)
PASSED_ON = ("paths.root_dir", "paths.data_dir", "paths.weights_dir", "paths.log_dir", "seed", "plots",
             "trust_checkpoint", "trainer.accelerator", "trainer.precision")


def parse_target(entry: Any, index: int) -> tuple[str, list[str]]:
    """``(data config name, extra overrides)`` of one ``eval_targets`` entry."""
    if isinstance(entry, str) and entry:
        return entry, []
    if isinstance(entry, dict) and isinstance(entry.get("data"), str):
        extra = entry.get("overrides") or []
        if not isinstance(extra, list) or not all(isinstance(o, str) for o in extra):
            raise ConfigError(f"eval_targets[{index}].overrides must be a list of strings like 'data.root=/path', got {extra!r}")
        return entry["data"], list(extra)
    raise ConfigError(f"eval_targets[{index}] must be a data config name (e.g. dtd) or {{data: NAME, overrides: [...]}}, "
                      f"got {entry!r}")


def target_overrides(cfg: DictConfig, name: str, extra: list[str], ckpt_path: str, output_dir: Path) -> list[str]:
    """The eval config's overrides for one target: the checkpoint, the target data, the run's kept values."""
    kept = []
    for key in PASSED_ON:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            kept.append(f"{key}={value}")
    return [f"ckpt_path={ckpt_path}", f"data={name}", "retarget=true", f"run_name=transfer-{name}",
            f"paths.output_dir={output_dir}", *kept, *extra]


def compose_eval(overrides: list[str]) -> DictConfig:
    """The ``eval`` config with ``overrides``: in the running Hydra app's search path (user config folders
    included), or the package's when there is none (a library call)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name="eval", overrides=overrides)
    else:
        with initialize_config_module(config_module="clipft.conf", version_base="1.3"):
            cfg = compose(config_name="eval", overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def score_eval_targets(cfg: DictConfig, ckpt_path: str | None, run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{target: {accuracy, classes, output_dir}}`` for every entry of ``cfg.eval_targets`` ({} when none)."""
    targets = list(cfg.get("eval_targets") or [])
    if not targets:
        return {}
    if not ckpt_path:  # e.g. a zero-shot cell (train=false): nothing trained to carry to the targets
        log.warning("eval_targets skipped: this run has no trained checkpoint. A zero-shot model is scored on a target "
                    "as a run of its own (data=<target>); a trained run needs callbacks.model_checkpoint and a val split")
        return {}
    from clipft.pipeline.evaluate import run_eval

    scores: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(targets):
        name, extra = parse_target(OmegaConf.to_container(entry) if OmegaConf.is_config(entry) else entry, index)
        output_dir = run_dir / "transfer" / name
        overrides = target_overrides(cfg, name, extra, str(ckpt_path), output_dir)
        log.info("eval target %s: %s", name, " ".join(overrides))
        metrics = run_eval(compose_eval(overrides), overrides=overrides)
        for key, result in (metrics["summary"].get("transfer") or {}).items():
            scores[key] = {**result, "output_dir": str(output_dir)}
    return scores
