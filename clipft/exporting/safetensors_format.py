"""``--format safetensors``: the whole module's weights plus the JSON that rebuilds it (any method).

    OUT/model.safetensors     every weight (adapters merged), no pickle
    OUT/clipft_module.json    the clipft class and its hyper-parameters, checked like a checkpoint's

The folder is data only: :func:`load_safetensors_export` refuses classes and ``_target_`` values
outside clipft's registry, exactly as checkpoints are loaded (:mod:`clipft.utils.safe_targets`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from clipft.errors import CheckpointError

WEIGHTS = "model.safetensors"
MODULE_RECORD = "clipft_module.json"


def write(module: nn.Module, folder: Path, pixels: torch.Tensor, reference: torch.Tensor) -> tuple[list[str], float]:
    from safetensors.torch import save_file

    from clipft.exporting.common import check_logits, unshared_tensors
    from clipft.methods.classification import module_class_path, plain_containers
    from clipft.utils.io import atomic_write_json

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(unshared_tensors(state), str(folder / WEIGHTS), metadata={"format": "clipft-module"})
    atomic_write_json(folder / MODULE_RECORD, {
        "format": "clipft-module",
        "module": module_class_path(module),
        "hyper_parameters": plain_containers(dict(module.hparams)),
        "checkpoint_meta": plain_containers(dict(getattr(module, "checkpoint_meta", None) or {})),
    })
    reloaded = load_safetensors_export(folder)
    with torch.no_grad():
        diff = check_logits(reloaded(pixels), reference, f"the safetensors export reloaded from {folder}")
    return [WEIGHTS, MODULE_RECORD], diff


def load_safetensors_export(folder: str | Path, map_location: str = "cpu", trust_checkpoint: bool = False) -> nn.Module:
    """Rebuild the module of a ``--format safetensors`` folder (eval mode, ready to predict)."""
    from safetensors.torch import load_file

    from clipft.methods.loading import build_module

    folder = Path(folder).expanduser()
    record_file, weights_file = folder / MODULE_RECORD, folder / WEIGHTS
    if not record_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{str(folder)!r} is not a clipft safetensors export (needs {MODULE_RECORD} and {WEIGHTS})")
    try:
        record = json.loads(record_file.read_text())
        module_path, hparams = record["module"], dict(record["hyper_parameters"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(record_file)!r} cannot be read as a clipft module record ({exc})") from None
    module = build_module(module_path, hparams, load_file(str(weights_file)), str(record_file), trust_checkpoint)
    module.checkpoint_meta = dict(record.get("checkpoint_meta") or {})
    module = module.to(map_location).eval()
    with torch.no_grad():
        module.prepare_for_inference()
    return module
