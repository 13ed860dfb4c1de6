"""LoRA and the other PEFT adapters on either tower, through the ``peft`` library (Hu et al. 2022 for LoRA).

The adapter is injected into the image tower, the text tower or both. Only its parameters
train; the towers, projections and temperature stay frozen. The objective is FLYP's
(:class:`~clipft.methods.contrastive_finetune.ContrastiveFineTune`: ``sim_weight`` x contrastive +
``cls_weight`` x CE against the class text, which itself moves when the text tower has an adapter);
``sim_weight: 0, cls_weight: 1`` is plain cross-entropy over the class prompts.

Two recipes ship as configs, and they are different methods:

- ``model=clip_lora`` is **clipft's recipe**: r 8, alpha 16 (scaling alpha/r = 2), no dropout, q/k/v
  *and* the output projection, FLYP's 0.5 contrastive + 0.5 CE, AdamW 1e-4 without weight decay,
  cosine with 50 warm-up steps.
- ``model=clip_lora_paper`` is **CLIP-LoRA** (Zanella & Ben Ayed, CVPRW 2024;
  MaxZanella/CLIP-LoRA @ 358f0d7): r 2, alpha 1, scaling alpha/sqrt(r) (``use_rslora``,
  ``loralib/layers.py:42``), dropout 0.25 before the low-rank path, q/k/v only
  (``target_modules: qkv``) in every block of both towers, plain CE on
  ``logit_scale * cos(image, "a photo of a {}.")`` (the reference fixes 100, which OpenAI CLIP's
  frozen scale is), AdamW 2e-4, weight decay 1e-2, betas (0.9, 0.999), cosine to 1e-6 over
  500 x shots iterations (``experiment=lora_paper``).

``adapter`` is a peft config mapping. ``peft_type: LORA`` with ``r``, ``lora_alpha``,
``lora_dropout`` (and ``use_rslora``) by default, or any tuner peft offers (``LOHA``, ``LOKR``,
``IA3``, ...) with that tuner's own keys. Target modules default per backbone
(:data:`DEFAULT_TARGETS`: the attention projections of HF CLIP and BERT, the attention output and
MLP of open_clip). ``target_modules: qkv`` names the query/key/value projections of the backbone
(:data:`QKV_TARGETS`); ``target_modules: {image: [...], text: [...]}`` gives module-name suffixes.

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
# target_modules: qkv. CLIP-LoRA's placement (MaxZanella/CLIP-LoRA@358f0d7 run_utils.py:34 params q k v,
# loralib/utils.py:107-134 every block of both encoders): the query, key and value projections, not the
# output one. open_clip packs q/k/v into one nn.MultiheadAttention in_proj (no separate modules to
# wrap); the dual encoder's CNN image tower has no attention.
QKV_TARGETS: dict[str, dict[str, list[str]]] = {
    "HFCLIPBackbone": {"image": ["q_proj", "k_proj", "v_proj"], "text": ["q_proj", "k_proj", "v_proj"]},
    "HFSiglipBackbone": {"image": ["q_proj", "k_proj", "v_proj"], "text": ["q_proj", "k_proj", "v_proj"]},
    "DualEncoderBackbone": {"text": ["query", "key", "value"]},
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
        target_modules: ``{tower: [module name suffixes]}`` overriding :data:`DEFAULT_TARGETS`, or
            ``qkv``: the backbone's query/key/value projections (:data:`QKV_TARGETS`, CLIP-LoRA's choice).
        Every other argument: :class:`~clipft.methods.contrastive_finetune.ContrastiveFineTune`.
    """

    passes_on = (
        "class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing", "sim_weight",
        "cls_weight", "contrastive_target", "loss",
    )

    def __init__(
        self,
        *args: Any,
        adapter: dict[str, Any] | None = None,
        adapt_towers: Sequence[str] = ("image", "text"),
        target_modules: dict[str, list[str]] | str | None = None,
        **kwargs: Any,
    ) -> None:
        towers = [str(t) for t in adapt_towers]
        if not towers or any(t not in TOWERS for t in towers):
            raise ConfigError(f"adapt_towers={list(adapt_towers)} must be a non-empty subset of {list(TOWERS)}")
        # a tower without an adapter is frozen as a whole, eval mode included (a CNN tower's BatchNorm statistics
        # stay; a frozen text tower's class text is cached): text-only LoRA may then train from a feature bank
        super().__init__(*args, freeze_logit_scale=True, freeze_image_tower="image" not in towers,
                         freeze_text_tower="text" not in towers, **kwargs)
        self.adapter_config = {**DEFAULT_ADAPTER, **dict(adapter or {})}
        targets = _targets(type(self.backbone).__name__, target_modules, towers)
        given_image = isinstance(target_modules, str) or bool(dict(target_modules or {}).get("image"))
        if "image" in towers and targets.get("image") == [] and not given_image:
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


def _targets(backbone: str, target_modules: Any, towers: Sequence[str]) -> dict[str, list[str]]:
    """``{tower: module-name suffixes}``: the backbone's defaults, the ``qkv`` preset, or given per tower."""
    if isinstance(target_modules, str):
        if target_modules != "qkv":
            raise ConfigError(f"target_modules={target_modules!r}: give qkv or {{image: [...], text: [...]}}")
        preset = QKV_TARGETS.get(backbone, {})
        for tower in towers:
            if not preset.get(tower):
                raise ConfigError(
                    f"target_modules=qkv: the {tower} tower of {backbone} has no separate query/key/value projections "
                    f"(known: {sorted(QKV_TARGETS)}); set target_modules={{{tower}: [module name suffixes]}} "
                    "or leave the tower out of adapt_towers"
                )
        return {tower: list(names) for tower, names in preset.items()}
    given = {str(k): list(v) for k, v in dict(target_modules or {}).items()}
    return {**DEFAULT_TARGETS.get(backbone, {}), **given}


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
