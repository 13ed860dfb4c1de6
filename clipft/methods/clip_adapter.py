"""CLIP-Adapter (Gao et al., "CLIP-Adapter: Better Vision-Language Models with Feature Adapters", IJCV 2023).

A bottleneck MLP on the frozen image embedding, blended residually:
``f' = ratio * A(f) + (1 - ratio) * f`` with ``A = Linear(D, D/reduction) -> ReLU -> Linear -> ReLU``,
classified against the frozen zero-shot head. Only the adapter trains. Defaults from the
reference implementation (github.com/gaopengcuhk/CLIP-Adapter): ratio 0.2, reduction 4.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.clip_method import CLIPMethod


class CLIPAdapter(CLIPMethod):
    """Residual MLP adapter on frozen image features; towers and text head frozen.

    Args:
        ratio: weight of the adapted feature in the residual blend, in [0, 1] (0 = zero-shot).
        reduction: bottleneck width = embed_dim // reduction.
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod`.
    """

    reads_image_features = True  # frozen image tower, read through image_features(): a feature bank may serve it

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing")

    def __init__(
        self,
        *args: Any,
        ratio: float = 0.2,
        reduction: int = 4,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= float(ratio) <= 1.0:
            raise ConfigError(f"ratio must be in [0, 1], got {ratio!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ConfigError(f"reduction must be an integer >= 1, got {reduction!r}")
        super().__init__(*args, freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True, **kwargs)
        self.ratio = float(ratio)
        dim = int(self.backbone.embed_dim)
        hidden = max(dim // reduction, 1)
        self.adapter = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(inplace=True), nn.Linear(hidden, dim, bias=False), nn.ReLU(inplace=True)
        )

    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": list(self.adapter.named_parameters())}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.image_features(images)
        adapted = self.ratio * self.adapter(image) + (1.0 - self.ratio) * image
        adapted = nn.functional.normalize(adapted, dim=-1)
        text = self._eval_text_features if self._eval_text_features is not None and not self.training else self.frozen_class_text()
        return self.logit_scale() * adapted @ text.to(adapted.dtype).t()

    def linear_head(self) -> None:
        return None  # the residual MLP adapter sits between the embedding and the class text
