"""Load any clipft checkpoint without the training config: the class is recorded inside it.

A checkpoint is data from whoever wrote it. Its module name and every ``_target_`` in its
hyper-parameters are checked against :mod:`clipft.utils.safe_targets` before anything is
imported or built; ``trust_checkpoint=True`` lifts that check for files you trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipft.errors import CheckpointError
from clipft.methods.legacy import upgrade_checkpoint
from clipft.utils.checkpoint_io import read_checkpoint
from clipft.utils.file_gate import check_checkpoint
from clipft.utils.locate import locate
from clipft.utils.safe_targets import building_from

__all__ = ["build_module", "load_module", "read_checkpoint"]


def load_module(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    trust_checkpoint: bool = False,
    **overrides: Any,
):
    """Rebuild the LightningModule recorded in the checkpoint and load its weights.

    ``trust_checkpoint``: build whatever the file names (dangerous: only for files you trust).
    """
    ckpt = read_checkpoint(path)
    meta = ckpt.get("clipft")
    if not isinstance(meta, dict) or "module" not in meta:
        raise CheckpointError(f"{str(path)!r} is not a clipft checkpoint (no 'clipft' entry naming its module)")
    hparams = ckpt.get("hyper_parameters", {})
    hparams = dict(hparams) if isinstance(hparams, dict) else hparams
    module_path, hparams = upgrade_checkpoint(meta["module"], hparams)  # clipft 0.1 names -> today's
    if isinstance(hparams, dict):
        hparams.update(overrides)
    state_dict = ckpt.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{str(path)!r} holds no 'state_dict' of weights")
    module = build_module(module_path, hparams, state_dict, str(path), trust_checkpoint, shown_as=meta["module"])
    module.checkpoint_meta = dict(meta)  # preprocessing the run used, read by clipft.evaluation.inference
    return module.to(map_location).eval()


def build_module(
    module_path: str, hparams: Any, state_dict: dict[str, Any], source: str, trust_checkpoint: bool = False,
    shown_as: str | None = None,
):
    """The module a file names, built and filled with its weights: the class and every ``_target_`` in
    ``hparams`` are checked against the registry first (unless ``trust_checkpoint``); ``source`` names the
    file in errors. Shared by checkpoints and ``--format safetensors`` exports."""
    import clipft.methods  # noqa: F401 - registers clipft's own methods (trusted code, not the file's choice)

    if trust_checkpoint:
        cls = locate(module_path)
    else:
        cls = check_checkpoint(module_path, hparams, source)  # refuses before importing anything it names
    with building_from(None if trust_checkpoint else source):
        module = cls(**hparams)
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise CheckpointError(
            f"{source!r} does not match its module {shown_as or module_path}: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    return module
