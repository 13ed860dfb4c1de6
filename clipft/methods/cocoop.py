"""CoCoOp: image-conditioned prompt context (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022).

CoOp's unified context plus a per-image shift ``pi(x)`` from a small meta-net
(``Linear(D, D/16) -> ReLU -> Linear(D/16, width)``) that reads the normalised image embedding, so
every image reads its own class prompts ``[SOS][ctx + pi(x)][CLASS][.][EOS]``; the logits are
``exp(logit_scale) * image @ its own class text`` (both normalised). That costs one text-tower pass
per image and class (the method's known price: the reference trains at batch 1).

Parity with the reference, KaiyangZhou/CoOp @ ff61507 (``trainers/cocoop.py``), checked by
``tests/test_parity_coop.py``; defaults are the reference's, clipft's variants are switches:

- context from "a photo of a" (``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml:31-34``), or
  ``ctx_init: null`` with ``n_ctx`` random vectors, N(0, 0.02) (``cocoop.py:75-88``), drawn as CoOp's
  (:mod:`clipft.methods.coop`: the run's seed, ``init_seed``); no CSC, class token at the end.
- ``meta_net_init: default``: PyTorch's ``nn.Linear`` initialisation, as the reference
  (``cocoop.py:95-99``; from the run's seed, or ``init_seed``'s generator). ``zero`` is clipft's variant
  (its behaviour before): the last layer starts at zero, so before any step CoCoOp equals CoOp (and
  zero-shot with the template).
- ``bias_decay: true``: weight decay on every trained parameter, the meta-net's biases included (Dassl's
  ``build_optimizer`` over the prompt learner's ``parameters()``, ``dassl/optim/optimizer.py:83-113``);
  ``false`` exempts them (clipft's CLIP practice, its behaviour before).
- SGD lr 0.002, constant warm-up (1 epoch at 1e-5) then cosine; the paper recipe
  (``clip_cocoop_paper.yaml``, ``experiment=cocoop_paper``) adds batch 1 and 10 epochs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.chunked_text import encode_prompts
from clipft.methods.coop import CoOp

META_NET_INITS = ("default", "zero")


def reset_linear(layer: nn.Linear, generator: torch.Generator | None) -> None:
    """``nn.Linear``'s own initialisation (``reset_parameters``), drawn from ``generator``."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


class CoCoOp(CoOp):
    """CoOp with a meta-net that conditions the context on each image.

    Args:
        meta_reduction: the meta-net's bottleneck is ``embed_dim // meta_reduction``.
        meta_net_init: ``default`` (``nn.Linear``'s, the reference) | ``zero`` (last layer at zero: starts at CoOp).
        bias_decay: weight decay on the meta-net's biases too (the reference) or not.
        text_chunk_size: image x class prompts encoded per checkpointed chunk (:class:`~clipft.methods.coop.CoOp`).
        Every other argument: :class:`~clipft.methods.coop.CoOp` (context is always unified, class token at the end).
    """

    passes_on = (
        "class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing", "ctx_init", "init_seed",
        "text_chunk_size",
    )

    def __init__(
        self,
        *args: Any,
        n_ctx: int = 4,
        meta_reduction: int = 16,
        meta_net_init: str = "default",
        bias_decay: bool = True,
        **kwargs: Any,
    ) -> None:
        if meta_net_init not in META_NET_INITS:
            raise ConfigError(f"meta_net_init must be one of {list(META_NET_INITS)}, got {meta_net_init!r}")
        super().__init__(*args, n_ctx=n_ctx, class_specific=False, class_token_position="end", **kwargs)
        self.bias_decay = bool(bias_decay)
        dim, width = int(self.backbone.embed_dim), int(self.prompt_embeddings.shape[-1])
        hidden = max(dim // int(meta_reduction), 1)
        self.meta_net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))
        generator, self._init_generator = self._init_generator, None
        if generator is not None:  # init_seed: the same draw whatever ran before
            for layer in (self.meta_net[0], self.meta_net[2]):
                reset_linear(layer, generator)
        if meta_net_init == "zero":
            nn.init.zeros_(self.meta_net[2].weight)
            nn.init.zeros_(self.meta_net[2].bias)

    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": [("ctx", self.ctx), *(("meta_net." + n, p) for n, p in self.meta_net.named_parameters())]}

    def conditioned_text_features(self, image: torch.Tensor) -> torch.Tensor:
        """``(batch, classes, dim)``: each image's own class prompts, encoded (``image``: the normalised embedding)."""
        batch, classes = image.shape[0], self.num_classes
        ctx = self.ctx.unsqueeze(0) + self.meta_net(image.to(self.ctx.dtype)).unsqueeze(1)  # (B, n_ctx, width)
        embeddings = self.prompt_embeddings.unsqueeze(0).repeat(batch, 1, 1, 1)  # (B, C, L, width)
        embeddings[:, :, self.ctx_positions] = ctx.unsqueeze(1).expand(-1, classes, -1, -1).to(embeddings.dtype)
        length = embeddings.shape[2]
        tokens = {"input_ids": self.prompt_ids.repeat(batch, 1), "attention_mask": self.prompt_mask.repeat(batch, 1)}
        text = encode_prompts(self.backbone, embeddings.view(batch * classes, length, -1), tokens, self.text_chunk_size)
        return text.view(batch, classes, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.image_features(images)
        text = self.conditioned_text_features(image)
        return self.logit_scale() * torch.einsum("bd,bcd->bc", image, text.to(image.dtype))

    def linear_head(self) -> None:
        return None  # each image reads its own class prompts

    def prepare_for_inference(self) -> None:
        """Nothing to cache: the class prompts depend on each image."""
