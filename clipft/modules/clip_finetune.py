"""CLIPFineTune: contrastive fine-tuning "like you pretrain" (FLYP) plus a classification term.

``loss = sim_weight * contrastive(image, class-prompt text) + cls_weight * CE(logits, y)``,
where ``logits = exp(logit_scale) * image_features @ class_text_features.T`` over every class.
The contrastive term uses multi-positive targets by default so same-class images in a batch
are not negatives of each other.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.modules.classification import ClassificationModule
from clipft.modules.losses import TARGET_MODES, contrastive_loss
from clipft.prompts import build_class_prompts, load_descriptions
from clipft.utils.instantiate import instantiate

MAX_LOGIT_SCALE = 100.0


class CLIPFineTune(ClassificationModule):
    """Fine-tune a CLIP-style backbone on classification with its text tower as the classifier.

    Args:
        class_names: dataset classes, in label order.
        clip: backbone config, ``{_target_: clipft.models.HFCLIPBackbone, ...}``.
        prompts: ``{templates: [...], descriptions: path | null, train_prompt: first | random}``.
            Evaluation averages every prompt of a class; training encodes one per class.
        sim_weight, cls_weight: weights of the contrastive and classification terms.
        contrastive_target: ``multi_positive`` | ``mask_same_class`` | ``arange``.
        freeze_logit_scale: keep the temperature fixed.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        clip: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        prompts: dict[str, Any] | None = None,
        sim_weight: float = 1.0,
        cls_weight: float = 1.0,
        label_smoothing: float = 0.0,
        contrastive_target: str = "multi_positive",
        freeze_logit_scale: bool = False,
    ) -> None:
        super().__init__(class_names, optimizer, scheduler, label_smoothing)
        self.save_hyperparameters()
        if sim_weight < 0 or cls_weight < 0 or sim_weight + cls_weight <= 0:
            raise ConfigError(
                f"model.sim_weight={sim_weight} and model.cls_weight={cls_weight}: both must be >= 0 "
                "and at least one > 0"
            )
        if contrastive_target not in TARGET_MODES:
            raise ConfigError(f"model.contrastive_target={contrastive_target!r} is not one of {list(TARGET_MODES)}")
        self.sim_weight, self.cls_weight = float(sim_weight), float(cls_weight)
        self.contrastive_target = contrastive_target
        self.backbone = instantiate(clip)
        if freeze_logit_scale:
            self.backbone.logit_scale.requires_grad_(False)

        prompts = dict(prompts or {})
        descriptions = (
            load_descriptions(prompts["descriptions"], self.class_names) if prompts.get("descriptions") else None
        )
        self.class_prompts = build_class_prompts(
            self.class_names, prompts.get("templates"), descriptions, prompts.get("extra")
        )
        self.train_prompt = prompts.get("train_prompt", "first")
        if self.train_prompt not in ("first", "random"):
            raise ConfigError(f"model.prompts.train_prompt={self.train_prompt!r} must be 'first' or 'random'")
        self._eval_text_features: torch.Tensor | None = None

    # ------------------------------------------------------------------ properties
    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.backbone.preprocessing)

    def logit_scale(self) -> torch.Tensor:
        return self.backbone.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    # ------------------------------------------------------------------ text side
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.backbone.tokenize(prompts, device=self.device)
        return self.backbone.encode_text(**tokens)

    @torch.no_grad()
    def class_text_features(self) -> torch.Tensor:
        """Zero-shot head: per class, the mean of its normalised prompt embeddings, renormalised."""
        flat = [p for per_class in self.class_prompts for p in per_class]
        feats = self.encode_prompts(flat)
        out, i = [], 0
        for per_class in self.class_prompts:
            out.append(nn.functional.normalize(feats[i : i + len(per_class)].mean(0), dim=-1))
            i += len(per_class)
        return torch.stack(out)

    def _train_prompts(self) -> list[str]:
        if self.train_prompt == "random":
            return [random.choice(p) for p in self.class_prompts]
        return [p[0] for p in self.class_prompts]

    # ------------------------------------------------------------------ forward / steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        text = self._eval_text_features
        if text is None or self.training:
            text = self.class_text_features()
        image = self.backbone.encode_image(images)
        return self.logit_scale() * image @ text.to(image.dtype).t()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        image = self.backbone.encode_image(images)
        text = self.encode_prompts(self._train_prompts())  # one prompt per class, with gradients
        scale = self.logit_scale()
        logits = scale * image @ text.t()
        loss_cls = self.classification_loss(logits, labels)
        loss_sim = contrastive_loss(image, text[labels], labels, scale, self.contrastive_target)
        loss = self.sim_weight * loss_sim + self.cls_weight * loss_cls
        bs = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/loss_sim", loss_sim, on_epoch=True, batch_size=bs)
        self.log("train/loss_cls", loss_cls, on_epoch=True, batch_size=bs)
        self.log("train/logit_scale", scale, on_epoch=True, batch_size=bs)
        return loss

    def _cache_text(self) -> None:
        self._eval_text_features = self.class_text_features()

    def on_validation_epoch_start(self) -> None:
        self._cache_text()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._cache_text()

    def on_predict_epoch_start(self) -> None:
        self._cache_text()

    def on_train_epoch_start(self) -> None:
        self._eval_text_features = None

    # ------------------------------------------------------------------ optimisation
    def named_parameter_groups(self) -> dict[str, Iterable[tuple[str, nn.Parameter]]]:
        return {"model": self.backbone.named_parameters()}
