"""ContrastiveFineTune: fine-tune "like you pretrain" (FLYP), with the combined loss and description prompts.

``loss = sim_weight * contrastive(image, text) + cls_weight * CE(logits, y)``, where the logits
are ``exp(logit_scale) * image @ class_text.T``: the class text embeddings are the classifier.
The text of a step is one prompt per class (``train_prompt``: first / name / description /
random) or, with ``per_image``, one caption per image (CLIP-style alignment, as in
``experiment=align_gtsrb``). With a frozen text tower the class text is computed once and the
method becomes the "frozen zero-shot head" recipe with a contrastive term.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torchmetrics import MeanMetric

from clipft.errors import ConfigError
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.distributed import gather_with_grad
from clipft.methods.lipsum import TEXT_COUNT, TOKEN_LENGTH, LipsumFT, check_lipsum_arguments
from clipft.methods.losses import LOSSES, TARGET_MODES, contrastive_loss, sigmoid_contrastive_loss


class ContrastiveFineTune(CLIPMethod):
    """FLYP and its variants (combined loss, description prompts, per-image captions).

    Args:
        sim_weight, cls_weight: weights of the contrastive and classification terms (>= 0, sum > 0).
        contrastive_target: ``multi_positive`` | ``mask_same_class`` | ``arange`` (plain CLIP/FLYP).
        loss: ``softmax`` (CLIP's InfoNCE) | ``sigmoid`` (SigLIP's pairwise loss, with the backbone's
            ``logit_bias``): fine-tune with the objective the model was pretrained with.
        lipsum_weight, lipsum_tokens, lipsum_texts, lipsum_seed: Lipsum-FT's random-text regulariser
            (:mod:`clipft.methods.lipsum`; weight 0 = off).
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod`.
    """

    passes_on = (
        "class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing", "freeze_logit_scale",
        "learning_rates", "layer_decay",
    )
    # read through image_features(): with freeze_image_tower (LiT-style text tuning, CLIP-SVD / LN-tuning /
    # BitFit of the text tower alone) a feature bank may serve the tower's rows; the callback checks the flag
    reads_image_features = True

    def __init__(
        self,
        *args: Any,
        sim_weight: float = 1.0,
        cls_weight: float = 1.0,
        contrastive_target: str = "multi_positive",
        loss: str = "softmax",
        freeze_image_tower: bool = False,
        freeze_text_tower: bool = False,
        lipsum_weight: float = 0.0,
        lipsum_tokens: int = TOKEN_LENGTH,
        lipsum_texts: int = TEXT_COUNT,
        lipsum_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if contrastive_target not in TARGET_MODES:
            raise ConfigError(f"contrastive_target={contrastive_target!r} is not one of {list(TARGET_MODES)}")
        if loss not in LOSSES:
            raise ConfigError(f"loss={loss!r} is not one of {list(LOSSES)}")
        if freeze_image_tower and freeze_text_tower:
            raise ConfigError("freeze_image_tower and freeze_text_tower are both true: nothing would train")
        super().__init__(*args, freeze_image_tower=freeze_image_tower, freeze_text_tower=freeze_text_tower, **kwargs)
        self.sim_weight, self.cls_weight = float(sim_weight), float(cls_weight)  # checked by check_arguments
        self.contrastive_target = contrastive_target
        self.loss_kind = loss
        # the objective's parts per epoch: a torchmetrics mean updated on the device every step (no
        # self.log per step: Lightning's bookkeeping costs ~1.4 ms a call, docs/performance.md)
        self.train_loss_parts = torch.nn.ModuleDict({"loss_sim": MeanMetric(), "loss_cls": MeanMetric()})
        self.lipsum = LipsumFT(lipsum_weight, lipsum_tokens, lipsum_texts, lipsum_seed)

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """The loss weights (``sim_weight``, ``cls_weight``: each >= 0, their sum > 0), after the base's checks."""
        super().check_arguments(arguments)
        check_lipsum_arguments(arguments)
        weights = {k: arguments[k] for k in ("sim_weight", "cls_weight") if arguments.get(k) is not None}
        for key, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{key}={value!r} is not allowed: expected a number >= 0 (and sim_weight + cls_weight > 0)")
        if len(weights) == 2 and weights["sim_weight"] + weights["cls_weight"] <= 0:
            sim, cls_ = weights["sim_weight"], weights["cls_weight"]
            raise ConfigError(
                f"sim_weight={sim!r} + cls_weight={cls_!r} is 0: nothing would be trained; set at least one of them > 0 "
                "(FLYP: sim_weight=1 cls_weight=0; cross-entropy only: model=clip_linear_head)"
            )

    def training_text_features(self) -> torch.Tensor:
        """One text embedding per class for this step; a frozen text tower gives the cached zero-shot head."""
        if self.freeze_text_tower:
            return self.frozen_class_text()
        return self.encode_prompts(self.prompt_set.training_prompts(self.train_prompt, self._rng))

    @property
    def needs_training_pixels(self) -> bool:
        """Lipsum-FT's term runs the pretrained image tower on the batch's pixels: no feature bank then."""
        return self.lipsum.weight > 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        image = self.image_features(images)  # pixels, or a feature bank's rows when the image tower is frozen
        scale = self.logit_scale()
        per_image = self.train_prompt == "per_image" and not self.freeze_text_tower
        needs_class_text = self.cls_weight > 0 or (self.sim_weight > 0 and not per_image)
        text = self.training_text_features() if needs_class_text else None  # (classes, dim)
        zero = torch.zeros((), device=image.device)
        loss_cls = self.classification_loss(scale * image @ text.t(), labels) if self.cls_weight > 0 else zero
        if self.sim_weight > 0:
            # per_image: each image is paired with its own caption (CLIP-style pretraining / alignment)
            paired = self._caption_features(labels) if per_image else text[labels]
            # under DDP the negatives span the global batch (gathered with gradients)
            image_all, paired_all, labels_all = gather_with_grad(image, paired, labels)
            if self.loss_kind == "sigmoid":
                bias = self.backbone.logit_bias if self.backbone.logit_bias is not None else 0.0
                loss_sim = sigmoid_contrastive_loss(image_all, paired_all, labels_all, scale, bias, self.contrastive_target)
            else:
                loss_sim = contrastive_loss(image_all, paired_all, labels_all, scale, self.contrastive_target)
        else:
            loss_sim = zero
        loss = self.sim_weight * loss_sim + self.cls_weight * loss_cls
        if self.lipsum.weight > 0:  # Lipsum-FT: the energy against random texts stays the zero-shot model's
            loss = loss + self.lipsum.loss(self, images, image)
        bs = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.train_loss_parts["loss_sim"].update(loss_sim.detach(), bs)
        self.train_loss_parts["loss_cls"].update(loss_cls.detach(), bs)
        if self._diagnostics_step():
            self.log("train/logit_scale", scale, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def on_train_epoch_end(self) -> None:
        """``train/loss_cls`` (beside ``val/loss`` in training_curves.png: both cross-entropy) and ``train/loss_sim``."""
        for name, mean in self.train_loss_parts.items():
            if mean.update_count:
                self.log(f"train/{name}", mean.compute(), on_step=False, on_epoch=True)
            mean.reset()

    def _caption_features(self, labels: torch.Tensor) -> torch.Tensor:
        """Encode one random caption of its class per image (not cached: the list changes every step)."""
        captions = self.prompt_set.captions_for(labels.tolist(), self._rng)
        return self.backbone.encode_text(**self.backbone.tokenize(captions, device=self.device))
