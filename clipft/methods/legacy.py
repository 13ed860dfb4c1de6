"""Checkpoints written before the method layer (clipft <= 0.1: ``clipft.modules``, one flag-driven
``CLIPFineTune``) load as today's methods: the recorded module name and hyper-parameters are
rewritten here, as data, before the safety check (nothing the file names is imported).
"""

from __future__ import annotations

from typing import Any

from clipft.errors import CheckpointError

OLD_PACKAGE = "clipft.modules."
NEW_PACKAGE = "clipft.methods."
# CLIPFineTune's arguments that no longer exist on either successor
_CONTRASTIVE_ONLY = ("sim_weight", "cls_weight", "contrastive_target", "freeze_text_tower")
_LINEAR_ONLY = ("init_head_from",)


def upgrade_checkpoint(module_path: Any, hparams: Any) -> tuple[Any, Any]:
    """``(module_path, hparams)`` of an old checkpoint in today's names; anything else is returned as is."""
    if not isinstance(module_path, str) or not isinstance(hparams, dict):
        return module_path, hparams
    if module_path.startswith(OLD_PACKAGE):
        module_path = NEW_PACKAGE + module_path[len(OLD_PACKAGE):]
    if module_path.rsplit(".", 1)[-1] != "CLIPFineTune" or not module_path.startswith(NEW_PACKAGE):
        return module_path, hparams
    hparams = dict(hparams)
    head = hparams.pop("head", "text")
    if head == "linear":
        if float(hparams.get("sim_weight", 0.0) or 0.0) > 0:
            raise CheckpointError(
                "this checkpoint is an old CLIPFineTune with a linear head *and* a contrastive term, a combination "
                "no method has any more; evaluate it with clipft 0.1"
            )
        for key in _CONTRASTIVE_ONLY:
            hparams.pop(key, None)
        return "clipft.methods.linear_head_finetune.LinearHeadFineTune", hparams
    for key in _LINEAR_ONLY:
        hparams.pop(key, None)
    return "clipft.methods.contrastive_finetune.ContrastiveFineTune", hparams
