"""Load any clipft checkpoint without the training config: the class is recorded inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipft.errors import CheckpointError
from clipft.utils.instantiate import locate


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise CheckpointError(
            f"{str(path)!r} cannot be loaded safely as a checkpoint (torch.load weights_only=True): {exc}. "
            "If it is not a clipft checkpoint, pass the right file; if you trust its source, load it "
            "yourself with torch.load(weights_only=False)."
        ) from exc


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
