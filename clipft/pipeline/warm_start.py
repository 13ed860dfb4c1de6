"""``init_from=CKPT``: start a run from another run's weights (not its optimizer, schedule or epoch).

Resuming (``ckpt_path``) continues the same run; warm-starting begins a new one (exp3 fine-tunes
exp2's best checkpoint at a much lower LR with a fresh cosine schedule). The checkpoint must have
been trained on the same classes, in the same order, and hold every weight of the new model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightning import LightningModule

from clipft.errors import CheckpointError
from clipft.methods.loading import read_checkpoint
from clipft.pipeline.evaluate import check_classes
from clipft.utils.file_gate import gate_weights_checkpoint

log = logging.getLogger(__name__)

IGNORED_MISSING = ("position_ids",)  # buffers some transformers versions do not save


def init_weights_from(model: LightningModule, path: str | Path, trust: bool = False) -> LightningModule:
    """Load ``path``'s ``state_dict`` into ``model`` in place; fail clearly on other classes or other weights."""
    ckpt = read_checkpoint(path)
    if "state_dict" not in ckpt:
        raise CheckpointError(f"init_from={str(path)!r} holds no 'state_dict': not a Lightning checkpoint")
    gate_weights_checkpoint(ckpt, str(path), trust=trust)
    ckpt_classes = (ckpt.get("hyper_parameters") or {}).get("class_names")
    if ckpt_classes is not None:
        check_classes(list(ckpt_classes), list(model.class_names), str(path))
    try:
        missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"init_from={str(path)!r} does not fit the configured model: {exc}") from exc
    missing = [k for k in missing if not k.endswith(IGNORED_MISSING)]
    if missing or unexpected:
        raise CheckpointError(
            f"init_from={str(path)!r} does not fit the configured model {type(model).__name__}: "
            f"{len(missing)} missing weights {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]} "
            "(was it trained with another model=... config?)"
        )
    log.info("initialised model weights from %s", path)
    return model
