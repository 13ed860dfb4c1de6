"""LoRA and the other PEFT adapters on either tower, through the ``peft`` library (Hu et al. 2022 for LoRA).

The adapter is injected into the image tower, the text tower or both. Only its parameters
train; the towers, projections and temperature stay frozen. The objective is FLYP's
(:class:`~clipft.methods.contrastive_finetune.ContrastiveFineTune`: contrastive + CE against
the class text, which itself moves when the text tower has an adapter).

``adapter`` is a peft config mapping. ``peft_type: LORA`` with ``r``, ``lora_alpha`` and
``lora_dropout`` by default, or any tuner peft offers (``LOHA``, ``LOKR``, ``IA3``, ...) with that
tuner's own keys. Target modules default per backbone (:data:`DEFAULT_TARGETS`: the attention
projections of HF CLIP and BERT, the attention output and MLP of open_clip). Give
``target_modules: {image: [...], text: [...]}`` for others.

Checkpoints hold the adapter, so resuming and the pipeline's test step are exact. After the
test, the pipeline writes ``checkpoints/inference.ckpt``: the adapter merged into the weights
with peft's ``merge_and_unload``, saved as a plain ContrastiveFineTune. ``clipft-predict``,
``clipft-ask`` and ``eval.py`` then load it without peft.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch

from clipft.errors import ConfigError
from clipft.methods.contrastive_finetune import ContrastiveFineTune

log = logging.getLogger(__name__)

DEFAULT_ADAPTER = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
# backbone class -> tower -> module-name suffixes peft wraps
DEFAULT_TARGETS: dict[str, dict[str, list[str]]] = {
    "HFCLIPBackbone": {"image": ["q_proj", "k_proj", "v_proj", "out_proj"], "text": ["q_proj", "k_proj", "v_proj", "out_proj"]},
    "OpenCLIPBackbone": {"image": ["out_proj", "c_fc", "c_proj"], "text": ["out_proj", "c_fc", "c_proj"]},
    "HFSiglipBackbone": {"image": ["q_proj", "k_proj", "v_proj", "out_proj"], "text": ["q_proj", "k_proj", "v_proj", "out_proj"]},
    # image: a CNN tower (MobileNetV2 in sign-CLIP); its pointwise convolutions, see pointwise_convolutions
    "DualEncoderBackbone": {"image": [], "text": ["query", "key", "value"]},
}
TOWERS = ("image", "text")
ADAPTER_NAME = "default"
# ContrastiveFineTune's arguments: what the merged inference checkpoint keeps
_OWN_ARGS = ("adapter", "adapt_towers", "target_modules")


class PEFTFineTune(ContrastiveFineTune):
    """FLYP's objective, trained through a PEFT adapter only.

    Args:
        adapter: peft config (``peft_type`` + that tuner's keys), default LoRA r=8, alpha=16.
        adapt_towers: which towers get the adapter: ``[image]``, ``[text]`` or ``[image, text]``.
        target_modules: ``{tower: [module name suffixes]}`` overriding :data:`DEFAULT_TARGETS`.
        Every other argument: :class:`~clipft.methods.contrastive_finetune.ContrastiveFineTune`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        clip: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        prompts: dict[str, Any] | None = None,
        adapter: dict[str, Any] | None = None,
        adapt_towers: Sequence[str] = ("image", "text"),
        target_modules: dict[str, list[str]] | None = None,
        sim_weight: float = 1.0,
        cls_weight: float = 1.0,
        label_smoothing: float = 0.0,
        contrastive_target: str = "multi_positive",
        loss: str = "softmax",
    ) -> None:
        towers = [str(t) for t in adapt_towers]
        if not towers or any(t not in TOWERS for t in towers):
            raise ConfigError(f"adapt_towers={list(adapt_towers)} must be a non-empty subset of {list(TOWERS)}")
        super().__init__(
            class_names, clip, optimizer, scheduler, prompts, sim_weight, cls_weight, label_smoothing,
            contrastive_target, loss=loss, freeze_logit_scale=True,
        )
        self.save_hyperparameters()
        self.adapter_config = {**DEFAULT_ADAPTER, **dict(adapter or {})}
        targets = {**DEFAULT_TARGETS.get(type(self.backbone).__name__, {}), **dict(target_modules or {})}
        if "image" in towers and targets.get("image") == [] and not (target_modules or {}).get("image"):
            targets["image"] = pointwise_convolutions(self.backbone.image_tower)
        self._tuners: list[Any] = []  # peft's tuner wrappers (not submodules: their weights are the towers')
        for tower in towers:
            if not targets.get(tower):
                raise ConfigError(
                    f"no default PEFT target modules for the {tower} tower of {type(self.backbone).__name__}; "
                    f"set target_modules.{tower}=[module name suffixes] (e.g. the tower's Linear layers)"
                )
            module = self.backbone.image_tower if tower == "image" else self.backbone.text_tower
            self._tuners.append(_inject(module, self.adapter_config, targets[tower]))
        prefix = _adapter_prefix(self.adapter_config["peft_type"])
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(prefix in name)
        self.trainable_parameters = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        log.info("PEFT %s on %s: %d trainable parameters of %d (%.2f%%)", self.adapter_config["peft_type"],
                 "+".join(towers), self.trainable_parameters, total, 100.0 * self.trainable_parameters / max(total, 1))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for logger in self.loggers:
            logger.log_hyperparams({"trainable_parameters": self.trainable_parameters})

    def inference_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        """The adapter merged into the weights (peft's merge_and_unload), as a plain ContrastiveFineTune."""
        merged = copy.deepcopy(self).cpu()
        for tuner in merged._tuners:
            tuner.merge_and_unload()
        hparams = {k: v for k, v in dict(self.hparams).items() if k not in _OWN_ARGS}
        hparams["freeze_logit_scale"] = True
        return "clipft.methods.contrastive_finetune.ContrastiveFineTune", hparams, merged.state_dict()


def pointwise_convolutions(tower: torch.nn.Module) -> list[str]:
    """A CNN tower's 1x1 convolutions (groups 1) and Linear layers by full name: where LoRA goes in a CNN
    (the pointwise expand / project convolutions carry most weights; peft's LoRA does not wrap the
    depthwise 3x3 ones, and they are few parameters)."""
    def pointwise(module: torch.nn.Module) -> bool:
        if isinstance(module, torch.nn.Conv2d):
            return module.kernel_size == (1, 1) and module.groups == 1
        return isinstance(module, torch.nn.Linear)

    names = [name for name, module in tower.named_modules() if pointwise(module)]
    if not names:
        raise ConfigError(f"the image tower {type(tower).__name__} has no 1x1 convolution or Linear layer for the adapter; "
                          "set target_modules.image=[module name suffixes]")
    return names


def _inject(module: torch.nn.Module, adapter: dict[str, Any], targets: list[str]) -> Any:
    try:
        from peft import get_peft_config
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    except ImportError as exc:
        raise ConfigError("PEFT fine-tuning needs the peft library: pip install 'clipft[peft]' (or pip install peft)") from exc
    try:
        config = get_peft_config({**adapter, "target_modules": list(targets)})
        tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]
        return tuner_cls(module, config, ADAPTER_NAME)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"adapter={adapter} with target_modules={targets}: peft refused it ({exc})") from exc


def _adapter_prefix(peft_type: str) -> str:
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from peft.utils import PeftType

    return PEFT_TYPE_TO_PREFIX_MAPPING[PeftType(str(peft_type).upper())]
