"""CLIPFineTune: contrastive fine-tuning "like you pretrain" (FLYP) plus a classification term.

``loss = sim_weight * contrastive(image, class text) + cls_weight * CE(logits, y)``.
With ``head: text`` (FLYP) the logits are ``exp(logit_scale) * image @ class_text.T``; with
``head: linear`` a linear classifier initialised from the zero-shot head gives them (so
epoch 0 scores the zero-shot accuracy), or from a linear-probe checkpoint (LP-FT).
Freezing the text tower turns the class text into a fixed zero-shot head computed once: the
"frozen zero-shot head" recipe (only the image tower trains). Each part (image tower, text
tower, head) may have its own learning rate, and layer-wise LR decay is a switch.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from clipft.errors import CheckpointError, ConfigError
from clipft.methods.classification import ClassificationModule
from clipft.methods.distributed import gather_with_grad
from clipft.methods.layer_decay import layer_decay_groups
from clipft.methods.losses import TARGET_MODES, contrastive_loss
from clipft.methods.prompt_tokens import PromptTokenCache
from clipft.methods.zeroshot_head import TEXT_BATCH, encode_texts, zeroshot_weights
from clipft.prompts import prompt_set_from_config
from clipft.utils.instantiate import instantiate

MAX_LOGIT_SCALE = 100.0
HEADS = ("text", "linear")
PARTS = ("image", "text", "projection", "head", "other")


class CLIPFineTune(ClassificationModule):
    """Fine-tune a CLIP-style backbone on classification.

    Args:
        class_names: dataset classes, in label order.
        clip: backbone config, ``{_target_: clipft.models.HFCLIPBackbone | OpenCLIPBackbone | DualEncoderBackbone, ...}``.
        prompts: ``{templates, descriptions, extra, train_prompt: first | name | description | random}``.
            Evaluation averages every prompt of a class; training encodes one per class.
        sim_weight, cls_weight: weights of the contrastive and classification terms.
        contrastive_target: ``multi_positive`` | ``mask_same_class`` | ``arange``.
        head: ``text`` (class text embeddings are the classifier) | ``linear``.
        init_head_from: ``zeroshot`` or a linear-probe checkpoint path (LP-FT); ``head: linear`` only.
        freeze_image_tower / freeze_text_tower: no gradients (and eval mode) for that tower.
        learning_rates: ``{image, text, projection, head, other}`` LRs; null parts use ``optimizer.lr``
            (``projection``: the towers' projections, for backbones that expose ``projection_parameters()``).
        layer_decay: layer-wise LR decay factor (e.g. 0.75) for transformer/CNN blocks, or null.
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
        head: str = "text",
        init_head_from: str | None = "zeroshot",
        freeze_image_tower: bool = False,
        freeze_text_tower: bool = False,
        learning_rates: dict[str, float | None] | None = None,
        layer_decay: float | None = None,
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
        if head not in HEADS:
            raise ConfigError(f"model.head={head!r} must be one of {list(HEADS)}")
        if freeze_image_tower and freeze_text_tower and head == "text":
            raise ConfigError("model.freeze_image_tower and model.freeze_text_tower are both true: nothing would train")
        unknown_parts = sorted(set(learning_rates or {}) - set(PARTS))
        if unknown_parts:
            raise ConfigError(f"model.learning_rates has unknown parts {unknown_parts}; allowed: {list(PARTS)}")
        if layer_decay is not None and not 0.0 < float(layer_decay) <= 1.0:
            raise ConfigError(f"model.layer_decay must be in (0, 1] or null, got {layer_decay}")
        self.sim_weight, self.cls_weight = float(sim_weight), float(cls_weight)
        self.contrastive_target = contrastive_target
        self.head_kind = head
        self.init_head_from = init_head_from
        self.freeze_image_tower, self.freeze_text_tower = bool(freeze_image_tower), bool(freeze_text_tower)
        self.learning_rates = dict(learning_rates or {})
        self.layer_decay = float(layer_decay) if layer_decay is not None else None

        self.backbone = instantiate(clip)
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

        self.head: nn.Linear | None = None
        if head == "linear":
            dim = _embed_dim(self.backbone)
            self.head = nn.Linear(dim, self.num_classes)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        # 1 once the head was initialised (zero-shot / linear probe); saved, so a resumed run keeps its head
        self.register_buffer("head_initialised", torch.zeros((), dtype=torch.long))
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
        if not hasattr(self, "_prompt_tokens"):
            self._prompt_tokens = PromptTokenCache()  # tokenise once, keep on device (issue 8)
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

    def training_text_features(self) -> torch.Tensor:
        """One text embedding per class for this step; a frozen text tower gives the cached zero-shot head."""
        if self.freeze_text_tower:
            if self._frozen_text_features is None:
                self._frozen_text_features = self.class_text_features()
            return self._frozen_text_features
        return self.encode_prompts(self.prompt_set.training_prompts(self.train_prompt, self._rng))

    # ------------------------------------------------------------------ head initialisation
    @torch.no_grad()
    def initialise_head(self) -> None:
        """``head: linear``: weights from the zero-shot head (x temperature) or a linear-probe checkpoint."""
        if self.head is None or bool(self.head_initialised):
            return
        source = self.init_head_from
        if source in (None, "", "none"):
            pass
        elif source == "zeroshot":
            self.head.weight.copy_(self.logit_scale() * self.class_text_features().to(self.head.weight))
            self.head.bias.zero_()
        else:
            weight, bias = _probe_head_from_checkpoint(str(source), self.class_names, self.head.weight.shape)
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        self.head_initialised.fill_(1)

    def zeroshot_reference(self) -> CLIPFineTune:
        """The same module before fine-tuning (pretrained backbone, initial head): WiSE-FT's alpha = 0."""
        clip = dict(self.hparams.get("clip") or {})
        if str(clip.get("_target_", "")).endswith("HFCLIPBackbone") and not clip.get("name_or_path"):
            raise CheckpointError(
                "WiSE-FT needs the pretrained weights this model started from, but its backbone is a randomly "
                "initialised CLIP (model.clip.name_or_path=null): there is no zero-shot model to interpolate with. "
                "Fine-tune from a hub id or a local CLIP folder."
            )
        reference = type(self)(**dict(self.hparams))
        reference.to(self.device)
        reference.initialise_head()
        return reference.eval()

    # ------------------------------------------------------------------ forward / steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.backbone.encode_image(images)
        if self.head is not None:
            return self.head(image)
        text = self._eval_text_features
        if text is None or self.training:
            text = self.class_text_features()
        return self.logit_scale() * image @ text.to(image.dtype).t()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        image = self.backbone.encode_image(images)
        scale = self.logit_scale()
        per_image = self.train_prompt == "per_image" and not self.freeze_text_tower
        needs_class_text = (self.head is None and self.cls_weight > 0) or (self.sim_weight > 0 and not per_image)
        text = self.training_text_features() if needs_class_text else None  # (classes, dim)
        if self.cls_weight > 0:
            logits = self.head(image) if self.head is not None else scale * image @ text.t()
            loss_cls = self.classification_loss(logits, labels)
        else:
            loss_cls = torch.zeros((), device=image.device)
        if self.sim_weight > 0:
            # per_image: each image is paired with its own caption (CLIP-style pretraining / alignment)
            paired = self._caption_features(labels) if per_image else text[labels]
            # under DDP the negatives span the global batch (gathered with gradients)
            loss_sim = contrastive_loss(*gather_with_grad(image, paired, labels), scale, self.contrastive_target)
        else:
            loss_sim = torch.zeros((), device=image.device)
        loss = self.sim_weight * loss_sim + self.cls_weight * loss_cls
        bs = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        if self._diagnostics_step():
            # Each self.log costs ~1 ms of Python on every step (Lightning's result bookkeeping): the
            # loss terms and temperature are diagnostics, so they are logged only when the logger writes.
            self.log_dict(
                {"train/loss_sim": loss_sim, "train/loss_cls": loss_cls, "train/logit_scale": scale},
                on_step=True,
                on_epoch=False,
                batch_size=bs,
            )
        return loss

    def _caption_features(self, labels: torch.Tensor) -> torch.Tensor:
        """Encode one random caption of its class per image (not cached: the list changes every step)."""
        captions = self.prompt_set.captions_for(labels.tolist(), self._rng)
        return self.backbone.encode_text(**self.backbone.tokenize(captions, device=self.device))

    def _diagnostics_step(self) -> bool:
        trainer = self._trainer
        return trainer is not None and self.global_step % max(int(trainer.log_every_n_steps), 1) == 0

    def _cache_text(self) -> None:
        self.initialise_head()  # a module evaluated without training (zero-shot) still gets its head
        self._eval_text_features = None if self.head is not None else self.class_text_features()

    def on_fit_start(self) -> None:
        self.initialise_head()

    def on_validation_epoch_start(self) -> None:
        self._cache_text()

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._cache_text()

    def on_predict_epoch_start(self) -> None:
        self._cache_text()

    def on_train_epoch_start(self) -> None:
        self._eval_text_features = None
        if self.freeze_image_tower:
            self.backbone.image_tower.eval()  # frozen BatchNorm statistics / dropout off
        if self.freeze_text_tower:
            self.backbone.text_tower.eval()

    # ------------------------------------------------------------------ optimisation
    def named_parameter_groups(self) -> dict[str, Iterable[tuple[str, nn.Parameter]]]:
        """``image``, ``text``, ``head`` and ``other`` (temperature, ...) parts; split per layer with layer_decay."""
        projection_ids = {id(p) for p in getattr(self.backbone, "projection_parameters", list)()}
        image_ids = {id(p) for p in self.backbone.image_parameters()} - projection_ids
        text_ids = {id(p) for p in self.backbone.text_parameters()} - projection_ids
        parts: dict[str, list[tuple[str, nn.Parameter]]] = {p: [] for p in PARTS}
        for name, param in self.backbone.named_parameters():
            if id(param) in projection_ids:
                part = "projection"
            else:
                part = "image" if id(param) in image_ids else "text" if id(param) in text_ids else "other"
            parts[part].append((name, param))
        if self.head is not None:
            parts["head"] = list(self.head.named_parameters())
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
        lrs: dict[str, float | None] = {}
        for part in PARTS:
            lrs[part] = self.learning_rates.get(part)
        for group, scale in getattr(self, "_part_lrs", {}).items():
            part = group.split(".", 1)[0]
            lrs[group] = (lrs.get(part) or base) * scale
        return lrs


def _embed_dim(backbone: nn.Module) -> int:
    dim = getattr(backbone, "embed_dim", None)
    if dim:
        return int(dim)
    with torch.no_grad():
        tokens = backbone.tokenize(["x"])
        return int(backbone.encode_text(**tokens).shape[-1])


def _probe_head_from_checkpoint(path: str, class_names: Sequence[str], shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """LP-FT: the ``head.weight``/``head.bias`` of a :class:`CLIPLinearProbe` checkpoint."""
    from clipft.methods.loading import read_checkpoint

    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", {})
    names = ckpt.get("hyper_parameters", {}).get("class_names")
    if "head.weight" not in state or "head.bias" not in state:
        raise CheckpointError(
            f"model.init_head_from={path!r} has no linear head (head.weight/head.bias); give a "
            "model=clip_linear_probe checkpoint, or init_head_from=zeroshot"
        )
    if names is not None and list(names) != list(class_names):
        raise CheckpointError(f"model.init_head_from={path!r} was trained on other classes than this dataset")
    if tuple(state["head.weight"].shape) != tuple(shape):
        raise CheckpointError(
            f"model.init_head_from={path!r}: head shape {tuple(state['head.weight'].shape)} does not fit "
            f"{tuple(shape)}; the linear probe must use the same backbone"
        )
    return state["head.weight"], state["head.bias"]
