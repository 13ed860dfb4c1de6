"""Load any clipft checkpoint without the training config: the class is recorded inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipft.errors import CheckpointError
from clipft.utils.checkpoint_io import read_checkpoint
from clipft.utils.instantiate import locate

__all__ = ["load_module", "read_checkpoint"]


def load_module(path: str | Path, map_location: str | torch.device = "cpu", **overrides: Any):
    """Rebuild the LightningModule recorded in the checkpoint and load its weights."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get("clipft")
    if not isinstance(meta, dict) or "module" not in meta:
        raise CheckpointError(f"{str(path)!r} is not a clipft checkpoint (no 'clipft' entry naming its module)")
    cls = locate(meta["module"])
    hparams = dict(ckpt.get("hyper_parameters", {}))
    hparams.update(overrides)
    module = cls(**hparams)
    missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise CheckpointError(
            f"{str(path)!r} does not match its module {meta['module']}: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    module.checkpoint_meta = dict(meta)  # preprocessing the run used, read by clipft.evaluation.inference
    return module.to(map_location).eval()
