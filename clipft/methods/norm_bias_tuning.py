"""Norm and bias tuning: only the LayerNorm affine parameters (LN-tuning) or only the biases (BitFit) train.

Two selective fine-tuning baselines on the text head's cross-entropy (ContrastiveFineTune's objective
with ``sim_weight 0, cls_weight 1``: one prompt per class, re-encoded with gradients every step when the
text tower trains, the cached zero-shot head when it does not), everything else frozen:

- ``tune: bias`` is **BitFit** (Ben Zaken, Ravfogel & Goldberg, ACL 2022; benzakenelad/BitFit @
  7ead19a8350a01d5701f9e2df896a1c5b42c3723, ``glue_evaluator.py:73-82`` (``BIAS_TERMS_DICT['all'] = 'bias'``)
  and ``:612-628`` (``_deactivate_relevant_gradients``): every parameter whose name contains ``bias`` trains, LayerNorm
  biases included, plus the task head; a CLIP's head is the class text, so there is none to add).
- ``tune: layernorm`` is **LN-tuning** as Qi et al. define it ("Parameter-Efficient Tuning on Layer
  Normalization for Pre-trained Language Models", arXiv 2211.08682, 2022): the gain and bias of every
  ``nn.LayerNorm`` (open_clip's LayerNorm subclasses it) train; the same rule is Basu et al.'s
  LayerNorm tuning of ViTs ("Strong Baselines for Parameter Efficient Few-Shot Fine-tuning", AAAI 2024)
  and Zhao et al.'s of multimodal LLMs ("Tuning LayerNorm in Attention", ICLR 2024). No reference code
  was read for it: the rule is the papers' one-line definition.

What is followed is the selection rule, not a training script: neither reference fine-tunes CLIP, so
the optimiser and schedule are clipft's (``clip_norm_tuning.yaml``, ``clip_bitfit.yaml``).
Not done: BatchNorm/GroupNorm are not LayerNorms (a CNN tower has no LayerNorm: ``tune: layernorm``
refuses it; BitFit trains their biases, with their running statistics frozen in eval mode); the
projections and the temperature stay frozen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from clipft.errors import ConfigError
from clipft.methods.contrastive_finetune import ContrastiveFineTune

log = logging.getLogger(__name__)

TUNES = ("layernorm", "bias")
TOWERS = ("image", "text")
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def layernorm_parameters(tower: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Weight and bias of every ``nn.LayerNorm`` with affine parameters (LN-tuning)."""
    return [
        (f"{name}.{pname}", param)
        for name, module in tower.named_modules()
        if isinstance(module, nn.LayerNorm)
        for pname, param in module.named_parameters(recurse=False)
    ]


def bias_parameters(tower: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every parameter whose name contains ``bias`` (BitFit's ``'all': 'bias'`` rule)."""
    return [(name, param) for name, param in tower.named_parameters() if "bias" in name]


class NormBiasTuning(ContrastiveFineTune):
    """Cross-entropy on the text head, training only LayerNorm affine parameters or only biases.

    Args:
        tune: ``layernorm`` (LN-tuning) or ``bias`` (BitFit).
        tune_towers: ``[image, text]``, ``[image]`` or ``[text]``; a tower left out is frozen entirely.
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod` (the temperature stays frozen).
    """

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing")

    def __init__(
        self,
        *args: Any,
        tune: str = "layernorm",
        tune_towers: Sequence[str] = TOWERS,
        **kwargs: Any,
    ) -> None:
        if tune not in TUNES:
            raise ConfigError(f"tune={tune!r} must be one of {list(TUNES)} (LN-tuning or BitFit)")
        towers = [str(t) for t in tune_towers]
        if not towers or any(t not in TOWERS for t in towers):
            raise ConfigError(f"tune_towers={list(tune_towers)} must be a non-empty subset of {list(TOWERS)}")
        super().__init__(  # ContrastiveFineTune's objective, CE only: the class text re-encoded with gradients
            *args, sim_weight=0.0, cls_weight=1.0, freeze_image_tower="image" not in towers,
            freeze_text_tower="text" not in towers, freeze_logit_scale=True, **kwargs,
        )
        self.tune, self.tune_towers = tune, towers
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        select = layernorm_parameters if tune == "layernorm" else bias_parameters
        count = 0
        for tower in towers:
            module = self.backbone.image_tower if tower == "image" else self.backbone.text_tower
            chosen = select(module)
            if not chosen:
                raise ConfigError(
                    f"tune={tune}: the {tower} tower of {type(self.backbone).__name__} has no "
                    f"{'LayerNorm' if tune == 'layernorm' else 'bias'} parameters (a CNN with BatchNorm?); "
                    f"leave it out of tune_towers{' or use tune=bias (model=clip_bitfit)' if tune == 'layernorm' else ''}"
                )
            for _, param in chosen:
                param.requires_grad_(True)
            count += sum(p.numel() for _, p in chosen)
        self.trainable_parameters = count
        log.info("%s tuning on %s: %d trainable parameters", tune, "+".join(towers), count)

    def on_train_epoch_start(self) -> None:
        """BatchNorm layers stay in eval mode: their running statistics are not among the tuned parameters."""
        super().on_train_epoch_start()
        for module in self.backbone.modules():
            if isinstance(module, BATCH_NORMS):
                module.eval()

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for logger in self.loggers:
            logger.log_hyperparams({"trainable_parameters": self.trainable_parameters})
