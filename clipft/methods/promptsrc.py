"""PromptSRC: deep prompts held to the frozen model (Khattak et al., "Self-regulating Prompts: Foundational Model
Adaptation without Forgetting", ICCV 2023).

Independent deep prompts in both towers (IVLP): learned text tokens in the first ``prompt_depth_text`` text
layers and learned image tokens in the first ``prompt_depth_image`` image layers, towers frozen. Training adds
three self-regularising terms that pull the prompted model towards the frozen one, and the final prompts are a
Gaussian-weighted average of the prompts after each epoch (GPA).

After the reference implementation, github.com/muzairkhattak/PromptSRC @ bb95c77 (``trainers/promptsrc.py``,
``clip/model.py``, ``configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml``, ``train.py:114-124``);
``tests/test_parity_promptsrc.py`` transcribes it and compares:

- text: ``"<ctx_init> <name>."``, its first ``n_ctx_text`` tokens the learned layer-0 context (``promptsrc.py:88-112``,
  as MaPLe); text layers ``1 .. J_t - 1`` each have their own ``(n_ctx_text, width)`` prompts, N(0, 0.02), which replace
  the context positions at their input (``clip/model.py:210-252``, ``ResidualAttentionBlock_IVLP``).
- image: ``n_ctx_image`` tokens appended after the patch tokens (positions added, before the pre-norm), replaced by
  each image layer ``1 .. J_i - 1``'s own prompts (``clip/model.py:370-379,406-408,234-241``); ``J_i = 0``: no image
  prompts (the text-only variant, which also runs on backbones whose image tower takes no tokens).
- loss (``promptsrc.py:297-313``): ``CE + L1(text, frozen text) * 25 + L1(image, frozen image) * 10 +
  KL(frozen logits || logits) / (batch * classes)`` on normalised features; the frozen text is the frozen tower's
  mean over the prompt set's templates of the *unnormalised* class text, then normalised (``promptsrc.py:118-128,
  199-205``); ``clip_promptsrc.yaml`` sets the reference's 60 ImageNet templates (``trainers/imagenet_templates.py``).
- GPA (``promptsrc.py:262-270,320-335,358-360``): after the last batch of epoch ``e`` (1-based) the learned
  parameters are added with weight ``N(e; gpa_mean, gpa_std)``, normalised over the run's ``max_epochs``; after the
  last epoch the weighted sum replaces them (before that epoch's validation). ``gpa_mean: null`` turns it off.
- SGD lr 0.0025, momentum 0.9, weight decay 5e-4 on every learned parameter, one warm-up epoch at 1e-5 then
  cosine, batch 4, 20 epochs, GPA N(15, 1) (the base-to-novel config, ``vit_b16_c2_ep20_batch4_4+4ctx.yaml:1-4,16-23,
  33-43``); the few-shot config (``vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml``) trains 50 epochs with GPA N(30, 30).

Not done: fp16 (``PREC: fp16``); the reference's random draws interleave with CLIP's construction and cannot be
replayed (here: the context, then image prompts, then text prompts, from the run's seed). GPA's running sum is not
in the checkpoint: a run resumed mid-way averages the epochs after the resume only; an early stop before the
last epoch leaves the last epoch's prompts (a warning says so).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.coop import CTX_STD, CoOp
from clipft.methods.maple import MAX_INIT_CTX, deep_prompt_class_text, keep_first_context_tokens
from clipft.models.contract import check_deep_prompt_depths, deep_prompt_widths

log = logging.getLogger(__name__)
TEXT_ONLY_HINT = "model.prompt_depth_image=0"


def gpa_weights(n_epochs: int, mean: float, std: float) -> list[float]:
    """Each epoch's weight: the Gaussian density at epochs 1..N, normalised to sum 1 (``promptsrc.py:265-270,358-360``)."""
    dens = [math.exp(-0.5 * ((a - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for a in range(1, n_epochs + 1)]
    total = sum(dens)
    if not total > 0:
        raise ConfigError(f"gpa_mean={mean}, gpa_std={std} give every one of the {n_epochs} epochs weight 0; widen gpa_std")
    return [d / total for d in dens]


def check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class PromptSRC(CoOp):
    """Independent deep text and image prompts with self-regularisation and Gaussian prompt aggregation.

    Args:
        n_ctx_text / n_ctx_image: prompt tokens per text / image layer.
        ctx_init: the template whose first ``n_ctx_text`` tokens start the text context (used when <= 4), or null.
        prompt_depth_text: layers of the text tower with prompts (>= 1; 1: the input only).
        prompt_depth_image: layers of the image tower with prompts (0: none, the text-only variant).
        text_loss_weight / image_loss_weight: weights of the L1 terms towards the frozen text / image features.
        gpa_mean / gpa_std: the Gaussian over epochs (1-based) of the prompt aggregation; ``gpa_mean: null``: off.
        Every other argument: :class:`~clipft.methods.coop.CoOp` (one shared context, class token at the end).
    """

    # text-only (prompt_depth_image=0): the frozen image tower, read through image_features(), so a feature bank
    # may serve it; with image prompts the tower reads prompt tokens and needs_training_pixels keeps pixels
    reads_image_features = True

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing", "init_seed")

    def __init__(
        self,
        *args: Any,
        n_ctx_text: int = 4,
        n_ctx_image: int = 4,
        ctx_init: str | None = "a photo of a",
        prompt_depth_text: int = 9,
        prompt_depth_image: int = 9,
        text_loss_weight: float = 25.0,
        image_loss_weight: float = 10.0,
        gpa_mean: float | None = 15.0,
        gpa_std: float = 1.0,
        **kwargs: Any,
    ) -> None:
        n_ctx_text, n_ctx_image = check_int(n_ctx_text, "n_ctx_text", 1), check_int(n_ctx_image, "n_ctx_image", 1)
        depth_text, depth_image = check_int(prompt_depth_text, "prompt_depth_text", 1), check_int(prompt_depth_image, "prompt_depth_image", 0)
        if gpa_mean is not None and not float(gpa_std) > 0:
            raise ConfigError(f"gpa_std must be > 0, got {gpa_std!r}")
        from_words = bool(ctx_init) and n_ctx_text <= MAX_INIT_CTX
        super().__init__(*args, n_ctx=n_ctx_text, ctx_init=ctx_init if from_words else None, **kwargs)
        depths = {"text": (depth_text, "prompt_depth_text"), "image": (depth_image, "prompt_depth_image")}
        check_deep_prompt_depths(self.backbone, "PromptSRC", depths, TEXT_ONLY_HINT)
        if from_words:
            keep_first_context_tokens(self, n_ctx_text, str(ctx_init))
        generator, self._init_generator = self._init_generator, None
        text_width, dtype = int(self.prompt_embeddings.shape[-1]), self.ctx.dtype
        image_width = deep_prompt_widths(self.backbone)["image"] if depth_image else 0
        self.image_prompts = nn.ParameterList(
            [nn.Parameter(self._draw(n_ctx_image, image_width, dtype, generator)) for _ in range(depth_image)])
        self.text_prompts = nn.ParameterList(
            [nn.Parameter(self._draw(self.n_ctx, text_width, dtype, generator)) for _ in range(depth_text - 1)])
        self.text_loss_weight, self.image_loss_weight = float(text_loss_weight), float(image_loss_weight)
        self.gpa_mean = None if gpa_mean is None else float(gpa_mean)
        self.gpa_std = float(gpa_std)
        self._teacher: torch.Tensor | None = None
        self._gpa_sum: dict[str, torch.Tensor] = {}

    @staticmethod
    def _draw(rows: int, width: int, dtype: torch.dtype, generator: torch.Generator | None) -> torch.Tensor:
        return torch.empty(rows, width, dtype=dtype).normal_(0.0, CTX_STD, generator=generator)

    # ------------------------------------------------------------------ features
    def class_text_features(self) -> torch.Tensor:
        """Every class prompt (with the deep text prompts, if any), ``text_chunk_size`` classes per checkpointed chunk."""
        if not len(self.text_prompts):  # the input only: every backbone (CoOp's path)
            return super().class_text_features()
        return deep_prompt_class_text(self, list(self.text_prompts))

    @property
    def needs_training_pixels(self) -> bool:
        """Image prompts enter the image tower's layers: no feature bank's rows can stand for its output."""
        return len(self.image_prompts) > 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        if not len(self.image_prompts):
            return self.image_features(images)  # pixels, or a feature bank's rows
        return self.backbone.encode_image_deep_prompts(images, list(self.image_prompts))

    def teacher_prompts(self) -> list[list[str]]:
        """The prompt set's prompts per class, "_" in a class name read as a space (``promptsrc.py:108,123``)."""
        return [
            [prompt.replace(name, name.replace("_", " ")) for prompt in named] + described
            for name, named, described in zip(self.class_names, self.prompt_set.named, self.prompt_set.described)
        ]

    @torch.no_grad()
    def teacher_text_features(self) -> torch.Tensor:
        """The frozen tower's class text: per class the mean of its prompts' unnormalised features, normalised."""
        if self._teacher is None or self._teacher.device != self.device:
            rows = [self.backbone.encode_text(**self.backbone.tokenize(p, self.device), normalize=False).float().mean(0)
                    for p in self.teacher_prompts()]
            self._teacher = F.normalize(torch.stack(rows), dim=-1)
        return self._teacher

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.encode_images(images)
        text = self._eval_text_features
        if text is None or self.training:
            text = self.class_text_features()
        return self.logit_scale() * image @ text.to(image.dtype).t()

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if len(self.image_prompts):
            return None  # with image prompts the image features are not encode_image's
        return super().linear_head()  # text-only: the learned class text over the frozen image tower

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        """The prompt set is the frozen teacher's: swapping it changes the regulariser, not the learned prompts."""
        super(CoOp, self).set_prompts(prompts)
        self._teacher = None

    # ------------------------------------------------------------------ training
    def src_losses(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy and the three self-regularising terms (``promptsrc.py:189-211,297-313``)."""
        image, text = self.encode_images(images), self.class_text_features()
        scale = self.logit_scale()
        logits = scale * image @ text.to(image.dtype).t()
        with torch.no_grad():  # without image prompts the prompted image features are the frozen ones
            frozen_image = self.backbone.encode_image(images) if len(self.image_prompts) else image.detach()
            frozen_text = self.teacher_text_features().to(image.dtype)
            frozen_logits = scale * frozen_image @ frozen_text.t()
        kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(frozen_logits, dim=1), reduction="sum", log_target=True)
        return {
            "ce": self.classification_loss(logits, labels),
            "text_l1": F.l1_loss(text, frozen_text) * self.text_loss_weight,
            "image_l1": F.l1_loss(image, frozen_image) * self.image_loss_weight,
            "logits_kl": kl / logits.numel(),
        }

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        parts = self.src_losses(images, labels)
        loss = parts["ce"] + parts["logits_kl"] + parts["text_l1"] + parts["image_l1"]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        if self._diagnostics_step():
            for name, value in parts.items():
                self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=False, batch_size=len(labels))
        return loss

    # ------------------------------------------------------------------ Gaussian prompt aggregation
    def learned_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return self.extra_parameter_groups()["head"]

    def gpa_epoch_end(self, epoch: int, n_epochs: int) -> None:
        """Add the prompts after ``epoch`` (0-based) with its weight; after the last epoch, load the weighted sum."""
        if self.gpa_mean is None:
            return
        weight = gpa_weights(int(n_epochs), self.gpa_mean, self.gpa_std)[int(epoch)]
        with torch.no_grad():
            for name, param in self.learned_parameters():
                weighted = param.detach() * weight
                self._gpa_sum[name] = weighted if name not in self._gpa_sum else self._gpa_sum[name] + weighted
            if int(epoch) + 1 == int(n_epochs):
                for name, param in self.learned_parameters():
                    param.copy_(self._gpa_sum[name])
                self._gpa_sum = {}
                log.info("PromptSRC: the prompts are now the Gaussian-weighted average over the %d epochs", n_epochs)

    def on_train_start(self) -> None:
        super().on_train_start()
        self._gpa_sum = {}
        max_epochs = self.trainer.max_epochs
        if self.gpa_mean is not None and (max_epochs is None or max_epochs < 1):
            raise ConfigError(f"PromptSRC's prompt aggregation weighs the run's epochs: set trainer.max_epochs (got {max_epochs}) or gpa_mean=null")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if batch_idx + 1 == self.trainer.num_training_batches:  # the reference's last batch of the epoch
            self.gpa_epoch_end(self.current_epoch, self.trainer.max_epochs)

    def on_train_end(self) -> None:
        super().on_train_end()
        if self._gpa_sum:
            log.warning("PromptSRC: training stopped before epoch %s: the prompts are the last epoch's, not the "
                        "Gaussian-weighted average (gpa_mean=null to silence)", self.trainer.max_epochs)

    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        named = [("ctx", self.ctx)]
        named += [("text_prompts." + n, p) for n, p in self.text_prompts.named_parameters()]
        named += [("image_prompts." + n, p) for n, p in self.image_prompts.named_parameters()]
        return {"head": named}
