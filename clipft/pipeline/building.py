"""Build data, model, callbacks, loggers and trainer from a composed config."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from clipft.pipeline.launch import check_ddp_launch
from clipft.utils.checkpoint_io import with_atomic_checkpoint_io

log = logging.getLogger(__name__)


def to_plain(cfg: Any) -> Any:
    """Resolved plain Python containers (no OmegaConf objects end up in hparams or checkpoints)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def resolve_precision(precision: Any, accelerator: str | None = None) -> Any:
    """``auto``: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32 on CPU."""
    if precision not in (None, "auto"):
        return precision
    use_gpu = torch.cuda.is_available() and accelerator not in ("cpu",)
    if not use_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def instantiate_node(config: Any, config_path: str = "", **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a ClipftError raised by the object's constructor surfaces as itself,
    prefixed with ``config_path`` (the pipeline's one place that knows where a node sits: ``model``, ``data``).

    Hydra wraps constructor exceptions in ``InstantiationException``; the framework's own errors
    (a bad ``data.dedupe``, a missing folder, a bad loss weight) must stay one clear line.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from clipft.errors import ClipftError

    try:
        return instantiate(config, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ClipftError):
            raise exc.__cause__.located(config_path) from None
        raise
    except ClipftError as exc:
        raise exc.located(config_path) from None


def build_datamodule(cfg: DictConfig):
    return instantiate_node(cfg.data, config_path="data", _convert_="all")


def build_model(cfg: DictConfig, class_names: list[str], dataset_classes: list[str] | None = None):
    """The method from ``cfg.model``; ``model.compile`` (not a constructor argument) compiles its towers after.
    ``dataset_classes``: the dataset's classes when the run keeps a subset (``data.classes``): the prompts'
    descriptions keyed by label id are read in that label space."""
    from clipft.methods.compile import compile_towers, pop_compile
    from clipft.utils.safe_targets import check_optimizer_installed

    config = to_plain(cfg.model)
    prompts = config.get("prompts")
    if dataset_classes and list(dataset_classes) != list(class_names) and isinstance(prompts, dict) and prompts.get("descriptions"):
        prompts["dataset_classes"] = list(dataset_classes)
    options = pop_compile(config)
    optimizer = config.get("optimizer")
    check_optimizer_installed(optimizer.get("_target_") if isinstance(optimizer, dict) else None)  # bitsandbytes: one line
    model = instantiate_node(config, config_path="model", class_names=list(class_names), _recursive_=False, _convert_="all")
    compiled = compile_towers(model, options)
    if compiled:
        log.info("model.compile: torch.compile on %s (the first steps compile)", ", ".join(compiled))
    return model


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[Any]:
    from hydra.utils import instantiate

    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        if not has_logger and cb_cfg._target_.endswith("LearningRateMonitor"):
            log.info("no logger configured: skipping callback %s", name)
            continue
        callbacks.append(instantiate(cb_cfg, _convert_="all"))
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    from hydra.utils import instantiate

    loggers = []
    for lg_cfg in (cfg.get("logger") or {}).values():
        if lg_cfg is not None and "_target_" in lg_cfg:
            loggers.append(instantiate(lg_cfg, _convert_="all"))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any]):
    from hydra.utils import instantiate

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["precision"] = resolve_precision(trainer_cfg.get("precision"), trainer_cfg.get("accelerator"))
    plugins = with_atomic_checkpoint_io(trainer_cfg.pop("plugins", None))  # last.ckpt is never half-written
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=plugins, _convert_="all")
    check_ddp_launch(trainer)  # multirun + script-relaunching DDP: one clear error (clipft.pipeline.launch)
    return trainer


def spawns_workers(trainer: Any) -> bool:
    """Whether the strategy runs fit/test in spawned worker processes (``trainer=ddp_spawn``)."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


def trainer_for_test(trainer: Any, cfg: Any) -> Any:
    """The trainer that runs the final test: ``trainer`` itself, except under spawned workers.

    Spawned workers cannot hand per-sample test outputs back to this process (Lightning returns
    only weights and logged scalars), so ``metrics.json`` would lack its test report: test on
    one device of the same accelerator here instead (every test image once, no sampler padding).
    """
    if not spawns_workers(trainer):
        return trainer
    from omegaconf import open_dict

    single = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(single):
        single.trainer.devices = 1
        single.trainer.num_nodes = 1
        single.trainer.strategy = "auto"
        single.trainer.sync_batchnorm = False
    return build_trainer(single, callbacks=[], loggers=[])
