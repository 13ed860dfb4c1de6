"""Accelerator fast paths that depend on where the model runs, picked once at setup.

* Fused AdamW/Adam on CUDA: one kernel for the whole parameter update instead of a
  multi-tensor loop (``fused=True``); a config that sets ``fused`` or ``foreach`` is respected.
  Lightning moves the module to its device before ``configure_optimizers``, so the module's
  device decides.
* bf16 autocast is chosen by ``trainer.precision=auto`` (:func:`clipft.pipeline.building.resolve_precision`);
  SDPA attention is the backbones' default (``attn_implementation: sdpa``); the CNN baseline
  runs ``channels_last``; class prompts are tokenised once (:mod:`clipft.methods.prompt_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

FUSED_OPTIMIZERS = ("torch.optim.AdamW", "torch.optim.Adam")


def with_fused_optimizer(config: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """``config`` plus ``fused: true`` when it builds a fusable torch optimizer for a CUDA model."""
    cfg = dict(config)
    if (
        torch.device(device).type == "cuda"
        and cfg.get("_target_") in FUSED_OPTIMIZERS
        and "fused" not in cfg
        and "foreach" not in cfg
    ):
        cfg["fused"] = True
    return cfg
