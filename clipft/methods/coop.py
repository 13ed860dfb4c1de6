"""CoOp: learned prompt context (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

The class prompt is ``[ctx_1 ... ctx_M] <class name>.``, where the M context vectors live in
the text tower's token-embedding space and are the only trained parameters: both towers and
the temperature stay frozen. Context is unified (one set for all classes) or class-specific
(``class_specific``). It is initialised from a template's own word embeddings
(``ctx_init: "a photo of a"``: before any step the logits equal zero-shot with that template)
or randomly (``ctx_init: null``, N(0, 0.02), ``n_ctx`` vectors).
Defaults follow the reference implementation (github.com/KaiyangZhou/CoOp): SGD lr 0.002,
cosine schedule, ``class_token_position: end``; its 16-token random context is
``ctx_init=null n_ctx=16``.

Prompts are built through the backbone contract: ``<context> <name>.`` is tokenised once, the
context's token positions found (checked token by token), and
:meth:`~clipft.models.contract.VisionLanguageBackbone.encode_text_embeddings` encodes the
table's embeddings with the learned context written into those positions (HF CLIP, open_clip,
the MiniLM dual encoder; with a byte-level tokenizer every character is a context token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.clip_method import CLIPMethod

PLACEHOLDER = "X"  # the reference implementation's placeholder word


class CoOp(CLIPMethod):
    """Learned prompt context over frozen towers.

    Args:
        n_ctx: number of placeholder words when ``ctx_init`` is null (one learned vector per token they make).
        ctx_init: a template's words to start from (one learned vector per token), or null.
        class_specific: one context per class (CoOp's "CSC") instead of one shared context.
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod` (the towers are always frozen).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        clip: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        prompts: dict[str, Any] | None = None,
        n_ctx: int = 16,
        ctx_init: str | None = "a photo of a",
        class_specific: bool = False,
        label_smoothing: float = 0.0,
    ) -> None:
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise ConfigError(f"n_ctx must be an integer >= 1, got {n_ctx!r}")
        super().__init__(
            class_names, clip, optimizer, scheduler, prompts, label_smoothing,
            freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True,
        )
        if type(self) is CoOp:  # a subclass records its own arguments (a checkpoint rebuilds it from them)
            self.save_hyperparameters()
        table = self.backbone.token_embedding()
        self.class_specific = bool(class_specific)
        context = str(ctx_init) if ctx_init else " ".join([PLACEHOLDER] * n_ctx)
        names = [name.replace("_", " ") for name in self.class_names]
        tokens = self.backbone.tokenize([f"{context} {n}." for n in names])
        ids = tokens["input_ids"]
        self.ctx_positions = self._context_positions(context, ids)
        self.n_ctx = len(self.ctx_positions)
        self.register_buffer("prompt_ids", ids, persistent=False)
        mask = tokens.get("attention_mask")
        self.register_buffer("prompt_mask", mask if mask is not None else torch.ones_like(ids), persistent=False)
        with torch.no_grad():
            self.register_buffer("prompt_embeddings", table(ids).detach().clone(), persistent=False)
            if ctx_init:  # the template's own word embeddings
                start = self.prompt_embeddings[0, self.ctx_positions].clone()
            else:
                width = self.prompt_embeddings.shape[-1]
                start = torch.randn(self.n_ctx, width, generator=torch.Generator().manual_seed(0)) * 0.02
        ctx = start.unsqueeze(0).repeat(self.num_classes, 1, 1) if self.class_specific else start
        self.ctx = nn.Parameter(ctx.clone())

    # ------------------------------------------------------------------ prompts
    def _length(self, text: str) -> int:
        """Tokens of ``text`` without padding (attention mask, else non-zero ids: open_clip pads with 0)."""
        tokens = self.backbone.tokenize([text])
        mask = tokens.get("attention_mask")
        return int(mask.sum()) if mask is not None else int((tokens["input_ids"] != 0).sum())

    def _context_positions(self, context: str, ids: torch.Tensor) -> list[int]:
        """Where the context's tokens sit in every prompt: after the leading special token (BOS / CLS /
        SOT, when the tokenizer adds specials), as many as the context alone has; checked token by token."""
        specials = self._length("a") - 1
        lead = 1 if specials >= 1 else 0
        count = self._length(context) - specials
        alone = self.backbone.tokenize([context])["input_ids"][0, lead : lead + count]
        positions = list(range(lead, lead + count))
        if count < 1 or ids.shape[-1] < lead + count or not bool((ids[:, positions] == alone).all()):
            raise ConfigError(
                f"context {context!r} does not tokenise the same inside the class prompts with "
                f"{type(self.backbone).__name__}'s tokenizer; choose another ctx_init (or ctx_init=null)"
            )
        return positions

    def prompt_token_embeddings(self) -> torch.Tensor:
        """``(classes, length, width)``: the fixed prompt embeddings with the context written in."""
        ctx = self.ctx if self.class_specific else self.ctx.unsqueeze(0).expand(self.num_classes, -1, -1)
        embeddings = self.prompt_embeddings.clone()
        embeddings[:, self.ctx_positions] = ctx.to(embeddings.dtype)
        return embeddings

    def class_text_features(self) -> torch.Tensor:
        return self.backbone.encode_text_embeddings(self.prompt_token_embeddings(), self.prompt_ids, self.prompt_mask)

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        raise ConfigError("CoOp learns its prompts: template sets do not apply (score them with model=clip_zeroshot)")

    # ------------------------------------------------------------------ steps
    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": [("ctx", self.ctx)]}

