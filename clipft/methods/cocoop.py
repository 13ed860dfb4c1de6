"""CoCoOp: image-conditioned prompt context (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022).

CoOp's unified context plus a per-image shift ``pi(f)`` from a small meta-net
(``Linear(D, D/16) -> ReLU -> Linear(D/16, width)``), so every image reads its own class prompts.
That costs one text-tower pass per image and class (the method's known price: small batches).
Defaults from the reference implementation (github.com/KaiyangZhou/CoOp): context from
"a photo of a", meta-net reduction 16, SGD lr 0.002. One departure: the meta-net's last layer
starts at zero, so before any step CoCoOp equals CoOp (and zero-shot with the template).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clipft.methods.coop import CoOp


class CoCoOp(CoOp):
    """CoOp with a meta-net that conditions the context on each image.

    Args:
        meta_reduction: the meta-net's bottleneck is ``embed_dim // meta_reduction``.
        Every other argument: :class:`~clipft.methods.coop.CoOp` (context is always unified).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        clip: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        prompts: dict[str, Any] | None = None,
        n_ctx: int = 4,
        ctx_init: str | None = "a photo of a",
        meta_reduction: int = 16,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(class_names, clip, optimizer, scheduler, prompts, n_ctx, ctx_init, False, label_smoothing)
        self.save_hyperparameters()
        dim, width = int(self.backbone.embed_dim), int(self.prompt_embeddings.shape[-1])
        hidden = max(dim // int(meta_reduction), 1)
        self.meta_net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))
        nn.init.zeros_(self.meta_net[2].weight)
        nn.init.zeros_(self.meta_net[2].bias)

    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": [("ctx", self.ctx), *(("meta_net." + n, p) for n, p in self.meta_net.named_parameters())]}

    def conditioned_text_features(self, image: torch.Tensor) -> torch.Tensor:
        """``(batch, classes, dim)``: each image's own class prompts, encoded."""
        batch, classes = image.shape[0], self.num_classes
        ctx = self.ctx.unsqueeze(0) + self.meta_net(image.to(self.ctx.dtype)).unsqueeze(1)  # (B, n_ctx, width)
        embeddings = self.prompt_embeddings.unsqueeze(0).repeat(batch, 1, 1, 1)  # (B, C, L, width)
        embeddings[:, :, self.ctx_positions] = ctx.unsqueeze(1).expand(-1, classes, -1, -1).to(embeddings.dtype)
        length = embeddings.shape[2]
        text = self.backbone.encode_text_embeddings(
            embeddings.view(batch * classes, length, -1),
            self.prompt_ids.repeat(batch, 1),
            self.prompt_mask.repeat(batch, 1),
        )
        return text.view(batch, classes, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.backbone.encode_image(images)
        text = self.conditioned_text_features(image)
        return self.logit_scale() * torch.einsum("bd,bcd->bc", image, text.to(image.dtype))

    def linear_head(self) -> None:
        return None  # each image reads its own class prompts

    def prepare_for_inference(self) -> None:
        """Nothing to cache: the class prompts depend on each image."""
