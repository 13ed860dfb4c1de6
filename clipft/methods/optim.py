"""Optimizer and LR-schedule construction from plain config dicts.

Modules keep ``optimizer`` and ``scheduler`` as dicts in their hyper-parameters (no pickled
callables), so checkpoints stay loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.utils.instantiate import instantiate

NO_DECAY_HINTS = ("bias", "norm", "ln_", "logit_scale", "embedding", "bn", "class_embedding")


def split_decay(named_params: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weight decay for matrices only: biases, norms, embeddings and the temperature are exempt (CLIP practice)."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        lname = name.lower()
        if p.ndim < 2 or any(h in lname for h in NO_DECAY_HINTS):
            no_decay.append(p)
        else:
            decay.append(p)
    return decay, no_decay


def param_groups(
    named_groups: Mapping[str, Iterable[tuple[str, nn.Parameter]]],
    lrs: Mapping[str, float | None],
    base_lr: float,
    weight_decay: float,
) -> list[dict[str, Any]]:
    """One decay and one no-decay group per named part (e.g. image tower, text tower, head)."""
    groups = []
    for part, named in named_groups.items():
        lr = lrs.get(part) or base_lr
        decay, no_decay = split_decay(named)
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{part}"})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{part}_no_decay"})
    if not groups:
        raise ConfigError("nothing to train: every parameter is frozen (check the model's freeze_* settings)")
    return groups


def build_optimizer(config: Mapping[str, Any], groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """``config`` is ``{_target_: torch.optim.AdamW, lr, betas, eps, weight_decay, ...}``."""
    return instantiate(dict(config), groups)  # optimizer.lr is checked once, by ClassificationModule


def build_scheduler(
    config: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer, total_steps: int
) -> dict[str, Any] | None:
    """LR scheduler dict for Lightning.

    ``{name: cosine | linear | constant, warmup_steps | warmup_ratio, min_lr_ratio}`` (per step, from
    ``transformers``' ``get_*_schedule_with_warmup``), ``{name: onecycle,
    pct_start}``, ``{name: constant}`` or ``{name: none}``; any other mapping with ``_target_`` is
    instantiated as a torch scheduler (``interval`` defaults to epoch then).
    """
    if not config:
        return None
    cfg = dict(config)
    name = cfg.pop("name", None)
    interval = cfg.pop("interval", None)
    if "_target_" in cfg:
        sched = instantiate(cfg, optimizer)
        return {"scheduler": sched, "interval": interval or "epoch"}
    total_steps = max(int(total_steps), 1)
    if name in (None, "none"):
        return None
    if name in ("cosine", "constant", "linear"):
        return {"scheduler": warmup_schedule(name, cfg, optimizer, total_steps), "interval": "step"}
    if name == "onecycle":
        return {"scheduler": onecycle_schedule(cfg, optimizer, total_steps), "interval": "step"}
    raise ConfigError(
        f"model.scheduler.name={name!r} is not one of ['cosine', 'linear', 'constant', 'onecycle', 'none'] "
        "(or give a _target_ such as torch.optim.lr_scheduler.CosineAnnealingLR)"
    )


def warmup_schedule(name: str, cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """transformers' warm-up schedules (the ones HF and open_clip recipes quote): the LR rises linearly
    from 0 over warmup_steps, then follows the named shape down to min_lr_ratio x the group's LR."""
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = cfg.get("warmup_steps")
    if warmup is None:
        warmup = int(round(float(cfg.get("warmup_ratio", 0.0)) * total_steps))
    warmup = min(int(warmup), total_steps - 1) if total_steps > 1 else 0
    min_ratio = float(cfg.get("min_lr_ratio", 0.0))
    if name == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total_steps, min_lr_rate=min_ratio)
    if name == "linear":
        if min_ratio:
            raise ConfigError(
                f"model.scheduler.min_lr_ratio={min_ratio} needs name=cosine: the linear schedule "
                "(transformers.get_linear_schedule_with_warmup) decays to 0"
            )
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def onecycle_schedule(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """torch's OneCycleLR peaking at each group's own LR (per step)."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=float(cfg.get("pct_start", 0.3)),
        div_factor=float(cfg.get("div_factor", 25.0)),
        final_div_factor=float(cfg.get("final_div_factor", 1e4)),
    )
