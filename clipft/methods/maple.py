"""MaPLe: multi-modal prompt learning (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023).

Learned text context tokens in the first J layers of the text tower, each *coupled* to the image tower by
a linear map (text width -> image width) that gives that layer's image prompt tokens: the image side learns
nothing of its own, so the two towers' prompts move together. Both towers and the temperature stay frozen;
the logits are ``exp(logit_scale) * normalised prompted image @ normalised prompted class text``.

After the reference implementation, github.com/muzairkhattak/multimodal-prompt-learning @ 69bce21
(``trainers/maple.py``, ``clip/model.py``, ``configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml``) on
Dassl.pytorch; ``tests/test_parity_maple.py`` transcribes it and compares:

- text prompt ``"<ctx_init> <name>."`` (``maple.py:119-123``), its first ``n_ctx`` tokens after the start
  token the learned layer-0 context, starting as their word embeddings (``maple.py:84-92``; with ``ctx_init``
  null or ``n_ctx`` > 4: ``n_ctx`` placeholder words, N(0, 0.02), ``maple.py:93-97``). Default: 2 tokens of
  "a photo of a" (``vit_b16_c2_ep5_batch4_2ctx.yaml:31-36``).
- layer 0's image prompts ``proj(ctx)`` are appended after the patch tokens, position embeddings added and
  before the pre-norm (``maple.py:103,176``, ``clip/model.py:454-458``).
- deeper layers 1..J-1: text prompts ``compound_prompts_text[k]`` (N(0, 0.02), ``maple.py:111-114``) replace
  the context positions' hidden states at the input of text layer ``k + 1``; ``compound_prompt_projections[k]``
  of them replace the appended image tokens at image layer ``k + 1`` (``maple.py:116-117,171-176``,
  ``clip/model.py:287-331``). The J - 1 projections start as copies of one ``nn.Linear`` draw
  (``_get_clones``, ``maple.py:116-117,207-208``); ``proj`` is its own draw. Default J = 9 (``PROMPT_DEPTH``).
- only the prompt learner trains; cross-entropy (``maple.py:199-202``); SGD lr 0.0035, momentum 0.9, weight
  decay 5e-4 on every parameter, one warm-up epoch at 1e-5 then cosine per epoch, batch 4, 5 epochs
  (``vit_b16_c2_ep5_batch4_2ctx.yaml:1-3,15-22``, Dassl defaults): ``clip_maple.yaml`` and the trainer settings.

The towers run their own forward (:class:`clipft.models.contract.DeepPromptBackbone`, HF CLIP); a backbone
whose image tower takes no tokens (the CNN dual encoder) is refused at construction. Not done: the
reference's fp16 (``PREC: fp16``; here the backbone's dtype) and its hard-coded widths 512 / 768 (here the
towers' own widths). The random draws come from the run's seed as CoOp's (``init_seed``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.chunked_text import encode_prompts
from clipft.methods.cocoop import reset_linear
from clipft.methods.coop import CTX_STD, CoOp
from clipft.models.contract import check_deep_prompt_depths, deep_prompt_widths

MAX_INIT_CTX = 4  # maple.py:84: ctx_init is used when n_ctx <= 4, else a random start
TEXT_ONLY_HINT = "MaPLe couples the two towers; text-only deep prompts: model=clip_promptsrc model.prompt_depth_image=0"


def seeded_linear(in_features: int, out_features: int, dtype: torch.dtype, generator: torch.Generator | None) -> nn.Linear:
    """``nn.Linear`` with its own initialisation, drawn from ``generator`` (or the global RNG, one draw only)."""
    layer = nn.Linear(in_features, out_features, dtype=dtype)
    if generator is not None:
        reset_linear(layer, generator)
    return layer


def keep_first_context_tokens(module: CoOp, n_ctx: int, ctx_init: str) -> None:
    """The reference's context is the first ``n_ctx`` tokens of the template (``maple.py:88-92``,
    ``promptsrc.py:92-96``); the template's other tokens stay fixed words of the prompt."""
    if n_ctx > module.n_ctx:
        raise ConfigError(f"n_ctx={n_ctx} is more than the {module.n_ctx} tokens of ctx_init={ctx_init!r}")
    module.ctx_positions = module.ctx_positions[:n_ctx]
    module.n_ctx = n_ctx
    module.ctx = nn.Parameter(module.ctx.detach()[:n_ctx].clone())


def deep_prompt_class_text(module: CoOp, deep: list[torch.Tensor]) -> torch.Tensor:
    """Every class prompt of ``module`` with the layer prompts ``deep`` every class shares (MaPLe, PromptSRC),
    ``text_chunk_size`` classes per checkpointed chunk (:func:`clipft.methods.chunked_text.encode_prompts`)."""
    first = module.ctx_positions[0]

    def encode(embeddings: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return module.backbone.encode_text_deep_prompts(embeddings, ids, mask, first, deep)

    tokens = {"input_ids": module.prompt_ids, "attention_mask": module.prompt_mask}
    return encode_prompts(module.backbone, module.prompt_token_embeddings(), tokens, module.text_chunk_size, encode=encode)


class MaPLe(CoOp):
    """Coupled text and image prompts in the first ``prompt_depth`` layers of both towers.

    Args:
        n_ctx: prompt tokens per layer (the first ``n_ctx`` tokens of ``ctx_init`` at layer 0).
        ctx_init: the template whose words start the layer-0 context (used when ``n_ctx`` <= 4), or null (random).
        prompt_depth: J, the layers of each tower with prompts (1: the input only, "shallow MaPLe").
        init_seed: seed of the random draws (context, deep prompts, coupling maps); null: the global torch RNG.
        Every other argument: :class:`~clipft.methods.coop.CoOp` (one shared context, class token at the end).
    """

    reads_image_features = False  # the image tower reads prompt tokens: pixels, never a feature bank's rows

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing", "init_seed")

    def __init__(
        self,
        *args: Any,
        n_ctx: int = 2,
        ctx_init: str | None = "a photo of a",
        prompt_depth: int = 9,
        **kwargs: Any,
    ) -> None:
        if isinstance(prompt_depth, bool) or not isinstance(prompt_depth, int) or prompt_depth < 1:
            raise ConfigError(f"prompt_depth must be an integer >= 1, got {prompt_depth!r}")
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise ConfigError(f"n_ctx must be an integer >= 1, got {n_ctx!r}")
        from_words = bool(ctx_init) and n_ctx <= MAX_INIT_CTX
        super().__init__(*args, n_ctx=n_ctx, ctx_init=ctx_init if from_words else None, **kwargs)
        depths = {"text": (prompt_depth, "prompt_depth"), "image": (prompt_depth, "prompt_depth")}
        check_deep_prompt_depths(self.backbone, "MaPLe", depths, TEXT_ONLY_HINT)
        if from_words:
            keep_first_context_tokens(self, n_ctx, str(ctx_init))
        generator, self._init_generator = self._init_generator, None
        self.prompt_depth = int(prompt_depth)
        widths = deep_prompt_widths(self.backbone)
        text_width, image_width, dtype = widths["text"], widths["image"], self.ctx.dtype
        # the reference's draw order: proj, the deep text prompts, one projection (maple.py:103,111-117)
        self.proj = seeded_linear(text_width, image_width, dtype, generator)
        deep = [torch.empty(self.n_ctx, text_width, dtype=dtype) for _ in range(self.prompt_depth - 1)]
        for tensor in deep:
            tensor.normal_(0.0, CTX_STD, generator=generator)
        self.compound_prompts_text = nn.ParameterList([nn.Parameter(t) for t in deep])
        single = seeded_linear(text_width, image_width, dtype, generator)  # J - 1 copies of one draw
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(single) for _ in range(self.prompt_depth - 1)])

    # ------------------------------------------------------------------ prompts
    def image_prompts(self) -> list[torch.Tensor]:
        """Each layer's image prompts: the coupling maps of the text prompts (``maple.py:171-176``)."""
        deep = [layer(prompt) for layer, prompt in zip(self.compound_prompt_projections, self.compound_prompts_text)]
        return [self.proj(self.ctx), *deep]

    def class_text_features(self) -> torch.Tensor:
        """Every class prompt with the shared deep prompts, ``text_chunk_size`` classes per checkpointed chunk."""
        return deep_prompt_class_text(self, list(self.compound_prompts_text))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image_deep_prompts(images, self.image_prompts())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.encode_images(images)
        text = self._eval_text_features
        if text is None or self.training:
            text = self.class_text_features()
        return self.logit_scale() * image @ text.to(image.dtype).t()

    def linear_head(self) -> None:
        return None  # the image features are prompted too: no head over encode_image

    # ------------------------------------------------------------------ optimisation
    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        named = [("ctx", self.ctx), *(("proj." + n, p) for n, p in self.proj.named_parameters())]
        named += [("compound_prompts_text." + n, p) for n, p in self.compound_prompts_text.named_parameters()]
        named += [("compound_prompt_projections." + n, p) for n, p in self.compound_prompt_projections.named_parameters()]
        return {"head": named}
