"""CLIPMethod: what every CLIP-style adaptation method shares, so each method file holds only its recipe.

A method owns one backbone that follows :class:`clipft.models.contract.VisionLanguageBackbone`
and a prompt set (templates x class names, descriptions). This base gives it the text side
(class prompts -> zero-shot head), the logit scale, tower freezing, the parameter groups each
part's learning rate applies to (image / text / projection / head / other, optionally split
per layer), the zero-shot reference WiSE-FT interpolates towards and
:meth:`prepare_for_inference`, which caches the class text before predictions.
``forward`` defaults to the text head (image against the class text) and ``training_step`` to
cross-entropy on ``forward``'s logits; methods override what they change, and add parameters
outside the backbone with ``extra_parameter_groups``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from clipft.errors import CheckpointError, ConfigError
from clipft.methods.classification import ClassificationModule
from clipft.methods.features import encode_or_pass
from clipft.methods.layer_decay import layer_decay_groups
from clipft.methods.prompt_tokens import PromptTokenCache
from clipft.methods.zeroshot_head import TEXT_BATCH, encode_texts, zeroshot_weights
from clipft.prompts import prompt_set_from_config
from clipft.utils.instantiate import instantiate

MAX_LOGIT_SCALE = 100.0
PARTS = ("image", "text", "projection", "head", "other")


class CLIPMethod(ClassificationModule, abstract=True):
    """Base of the CLIP-style methods (not a method itself).

    Args:
        class_names: dataset classes, in label order.
        clip: backbone config ``{_target_: <a VisionLanguageBackbone>, ...}``.
        prompts: ``{templates, descriptions, extra, train_prompt}`` (see :mod:`clipft.prompts`).
        freeze_image_tower / freeze_text_tower: no gradients (and eval mode) for that tower.
        freeze_logit_scale: keep the temperature fixed.
        learning_rates: ``{image, text, projection, head, other}``; null parts use ``optimizer.lr``.
        layer_decay: layer-wise LR decay factor in (0, 1] for the towers' blocks, or null.
    """

    # True where the image tower is only read through image_features() and stays frozen, so a feature bank
    # (clipft.callbacks.FeatureBankCallback) may serve its outputs instead of pixels
    reads_image_features: ClassVar[bool] = False

    def __init__(
        self,
        class_names: Sequence[str],
        clip: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        prompts: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        freeze_image_tower: bool = False,
        freeze_text_tower: bool = False,
        freeze_logit_scale: bool = False,
        learning_rates: dict[str, float | None] | None = None,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__(class_names, optimizer, scheduler, label_smoothing)
        unknown_parts = sorted(set(learning_rates or {}) - set(PARTS))
        if unknown_parts:
            raise ConfigError(f"learning_rates has unknown parts {unknown_parts}; allowed: {list(PARTS)}")
        if layer_decay is not None and not 0.0 < float(layer_decay) <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1] or null, got {layer_decay}")
        self.freeze_image_tower, self.freeze_text_tower = bool(freeze_image_tower), bool(freeze_text_tower)
        self.learning_rates = dict(learning_rates or {})
        self.layer_decay = float(layer_decay) if layer_decay is not None else None

        self.backbone = instantiate(clip, config_path="clip")
        if freeze_logit_scale:
            self.backbone.logit_scale.requires_grad_(False)
        if self.freeze_image_tower:
            for p in self.backbone.image_parameters():
                p.requires_grad_(False)
        if self.freeze_text_tower:
            for p in self.backbone.text_parameters():
                p.requires_grad_(False)

        prompts = dict(prompts or {})
        self.prompt_set = prompt_set_from_config(self.class_names, prompts)
        self.class_prompts = self.prompt_set.per_class
        self.train_prompt = prompts.get("train_prompt") or "first"
        self._rng = random.Random(0)
        self._prompt_tokens = PromptTokenCache()  # tokenise once, keep on device (issue 8)
        self._eval_text_features: torch.Tensor | None = None
        self._frozen_text_features: torch.Tensor | None = None
        self._part_lrs: dict[str, float] = {}

    # ------------------------------------------------------------------ properties
    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.backbone.preprocessing)

    def logit_scale(self) -> torch.Tensor:
        return self.backbone.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    # ------------------------------------------------------------------ text side
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        if len(prompts) > TEXT_BATCH:
            return encode_texts(self.backbone, prompts, self.device)
        return self.backbone.encode_text(**self._prompt_tokens.get(self.backbone, prompts, self.device))

    def class_text_features(self) -> torch.Tensor:
        """Zero-shot head: per class, the mean of its normalised prompt embeddings, renormalised."""
        return zeroshot_weights(self.backbone, self.class_prompts, self.device)

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        """Swap the prompt set (e.g. another template set at evaluation) and drop cached heads."""
        self.prompt_set = prompt_set_from_config(self.class_names, prompts)
        self.class_prompts = self.prompt_set.per_class
        self._eval_text_features = self._frozen_text_features = None

    def frozen_class_text(self) -> torch.Tensor:
        """The zero-shot head computed once (for a frozen text tower)."""
        if self._frozen_text_features is None:
            self._frozen_text_features = self.class_text_features()
        return self._frozen_text_features

    # ------------------------------------------------------------------ lifecycle
    def prepare_for_inference(self) -> None:
        """Cache what every prediction reuses (the class text); called before val/test/predict and by the CLIs."""
        self._eval_text_features = self.class_text_features()

    def on_validation_epoch_start(self) -> None:
        self.prepare_for_inference()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.prepare_for_inference()

    def on_predict_epoch_start(self) -> None:
        self.prepare_for_inference()

    def on_train_epoch_start(self) -> None:
        self._eval_text_features = None
        if self.freeze_image_tower:
            self.backbone.image_tower.eval()  # frozen BatchNorm statistics / dropout off
        if self.freeze_text_tower:
            self.backbone.text_tower.eval()

    def zeroshot_reference(self) -> CLIPMethod:
        """The same method before adaptation (pretrained backbone, initial head): WiSE-FT's alpha = 0."""
        if not getattr(self.backbone, "is_pretrained", True):
            raise CheckpointError(
                "WiSE-FT needs the pretrained weights this model started from, but its backbone was randomly "
                "initialised (e.g. model.clip.name_or_path=null): there is no zero-shot model to interpolate with. "
                "Fine-tune from a hub id or a local folder."
            )
        reference = type(self)(**dict(self.hparams))
        reference.to(self.device)
        reference.prepare_for_inference()
        return reference.eval()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised image embedding: the image tower on pixels, or a feature bank's (raw) rows normalised."""
        return encode_or_pass(self.backbone, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The class text is the classifier: ``exp(logit_scale) * image @ class_text.T`` (cached outside training)."""
        image = self.image_features(images)
        text = self._eval_text_features
        if text is None or self.training:
            text = self.class_text_features()
        return self.logit_scale() * image @ text.to(image.dtype).t()

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The text head as a linear layer: ``exp(logit_scale) * class_text``, no bias."""
        text = self._eval_text_features if self._eval_text_features is not None else self.class_text_features()
        weight = (self.logit_scale() * text.float()).detach()
        return weight, torch.zeros(weight.shape[0], device=weight.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Cross-entropy on ``forward``'s logits: the objective of every method that does not say otherwise."""
        images, labels = batch[0], batch[1]
        loss = self.classification_loss(self(images), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    # ------------------------------------------------------------------ optimisation
    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters outside the backbone, by part (e.g. ``{"head": ...}``)."""
        return {}

    def named_parameter_groups(self) -> dict[str, Iterable[tuple[str, nn.Parameter]]]:
        """``image``, ``text``, ``projection``, ``head`` and ``other`` (temperature, ...) parts;
        the towers split per layer with ``layer_decay``."""
        projection_ids = {id(p) for p in self.backbone.projection_parameters()}
        image_ids = {id(p) for p in self.backbone.image_parameters()} - projection_ids
        text_ids = {id(p) for p in self.backbone.text_parameters()} - projection_ids
        parts: dict[str, list[tuple[str, nn.Parameter]]] = {p: [] for p in PARTS}
        for name, param in self.backbone.named_parameters():
            if id(param) in projection_ids:
                part = "projection"
            else:
                part = "image" if id(param) in image_ids else "text" if id(param) in text_ids else "other"
            parts[part].append((name, param))
        for part, named in self.extra_parameter_groups().items():
            parts[part] = parts.get(part, []) + list(named)
        self._part_lrs = {}
        if self.layer_decay is None:
            return {k: v for k, v in parts.items() if v}
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for part, named in parts.items():
            if part in ("image", "text"):
                for depth_name, (scale, members) in layer_decay_groups(named, self.layer_decay).items():
                    groups[f"{part}.{depth_name}"] = members
                    self._part_lrs[f"{part}.{depth_name}"] = scale
            elif named:
                groups[part] = named
        return groups

    def part_learning_rates(self) -> dict[str, float | None]:
        base = float(self.optimizer_config["lr"])
        self.named_parameter_groups()  # refreshes the per-layer scales
        lrs: dict[str, float | None] = {part: self.learning_rates.get(part) for part in PARTS}
        for group, scale in self._part_lrs.items():
            part = group.split(".", 1)[0]
            lrs[group] = (lrs.get(part) or base) * scale
        return lrs

    def _diagnostics_step(self) -> bool:
        """Whether the logger writes this step (extra diagnostics cost ~1 ms of Python per ``self.log``)."""
        trainer = self._trainer
        return trainer is not None and self.global_step % max(int(trainer.log_every_n_steps), 1) == 0
