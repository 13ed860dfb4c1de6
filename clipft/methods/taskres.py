"""TaskRes: a learned residual on the frozen zero-shot classifier (Yu et al., "Task Residual for Tuning
Vision-Language Models", CVPR 2023).

The class weights are ``W = T + alpha * R``: ``T`` the frozen text classifier, ``R`` a ``(classes, dim)``
residual that starts at zero (so epoch 0 is zero-shot) and is the only trained parameter. The logits are
``exp(logit_scale) * normalised image @ normalise(W).T``; both towers and the temperature stay frozen.

After the reference implementation, github.com/geekyutao/TaskRes @ 5195359 (``trainers/taskres.py``,
``configs/trainers/TaskRes/*.yaml``, ``train_regular.sh``) on Dassl.pytorch; ``tests/test_parity_taskres.py``
transcribes it and compares:

- ``T`` is the mean of the class's *raw* (unnormalised) prompt embeddings (``_get_base_text_features``,
  taskres.py:118-142), kept as a buffer as the reference's ``base_text_features`` (:97), so the residual's
  scale is the embedding's own (CLIP's text embeddings have norm ~7-10); ``W`` is normalised in the forward
  (:211-215). The prompts are ``prompts@model.prompts`` (the reference: one dataset template, ImageNet 7 + 1).
- ``residual_scale: 0.5`` (``RESIDUAL_SCALE``, taskres.py:95,101; 0.5 in every ``train_regular.sh`` line but
  Flowers102, 1.0; the code's default is 1.0).
- Adam lr 2e-3 (ImageNet 2e-4), weight decay 5e-4 (coupled L2, Dassl's default), betas (0.9, 0.999); one
  warm-up epoch at a constant 1e-5, then cosine over the epochs, stepped once per epoch
  (``adam_lr2e-3_B256_ep100.yaml:15-24``): ``scheduler: {name: constant_warmup_cosine}``
  (:class:`~clipft.methods.coop.ConstantWarmupCosineLR`). Batch 256, 100 epochs at 1-4 shots, 200 at 8-16:
  trainer and data settings (``train_regular.sh``).

Not done: the "enhanced base" (TaskRes*, a base classifier from a tuned text projection, taskres.py:144-178);
the base is computed in fp32 (the reference: fp16 with its default ``PREC``, then cast to fp32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.coop import WARMUP_COSINE, warmup_cosine_scheduler
from clipft.methods.zeroshot_head import raw_class_text


class TaskRes(CLIPMethod):
    """A zero-initialised residual on the frozen text classifier; towers frozen.

    Args:
        residual_scale: ``alpha`` in ``W = T + alpha * R``.
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod` (the towers are always frozen).
    """

    reads_image_features = True  # frozen image tower, read through image_features(): a feature bank may serve it

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing")

    def __init__(
        self,
        *args: Any,
        residual_scale: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if isinstance(residual_scale, bool) or not isinstance(residual_scale, (int, float)) or residual_scale < 0:
            raise ConfigError(f"residual_scale must be a number >= 0, got {residual_scale!r}")
        super().__init__(*args, freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True, **kwargs)
        self.residual_scale = float(residual_scale)
        dim = int(self.backbone.embed_dim)
        self.residual = nn.Parameter(torch.zeros(self.num_classes, dim))
        # the reference's base_text_features: filled from the frozen text tower the first time it is needed
        self.register_buffer("base_text", torch.zeros(self.num_classes, dim))
        self.register_buffer("base_ready", torch.zeros((), dtype=torch.long))
        self._base_checked = False

    # ------------------------------------------------------------------ the classifier
    def ensure_base(self) -> None:
        """Compute ``T`` once (a checkpoint brings its own)."""
        if not bool(self.base_ready):
            self.base_text.copy_(raw_class_text(self.backbone, self.class_prompts, self.device).to(self.base_text))
            self.base_ready.fill_(1)
        self._base_checked = True

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        """Another template set is another base: the residual was learned on this one."""
        raise ConfigError("TaskRes learns a residual on its own prompts' classifier: template sets do not apply "
                          "(score them with model=clip_zeroshot)")

    def class_weights(self) -> torch.Tensor:
        """``T + alpha * R`` (unnormalised)."""
        if not self._base_checked:
            self.ensure_base()
        return self.base_text + self.residual_scale * self.residual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.image_features(images).float()
        weights = nn.functional.normalize(self.class_weights().float(), dim=-1)
        return self.logit_scale() * image @ weights.t()

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        weight = (self.logit_scale() * nn.functional.normalize(self.class_weights().float(), dim=-1)).detach()
        return weight, torch.zeros(weight.shape[0], device=weight.device)

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self) -> None:
        self.ensure_base()

    def prepare_for_inference(self) -> None:
        self.ensure_base()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._base_checked = False  # the loaded flag decides whether T still has to be computed

    # ------------------------------------------------------------------ optimisation
    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": [("residual", self.residual)]}

    def configure_optimizers(self) -> Any:
        """The shared optimizer; ``scheduler.name: constant_warmup_cosine`` is Dassl's per-epoch schedule."""
        cfg = self.scheduler_config
        if not cfg or cfg.get("name") != WARMUP_COSINE:
            return super().configure_optimizers()
        self.scheduler_config = None
        try:
            optimizer = super().configure_optimizers()
        finally:
            self.scheduler_config = cfg
        return {"optimizer": optimizer, "lr_scheduler": warmup_cosine_scheduler(self, optimizer, cfg)}
