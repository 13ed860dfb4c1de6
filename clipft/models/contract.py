"""The backbone contracts every method is written against, so methods never probe with ``hasattr``.

:class:`VisionLanguageBackbone` is what a CLIP-style backbone must give (HF CLIP, open_clip and
the dual encoder implement all of it); :class:`ImageBackbone` is the CNN transfer baseline's
smaller contract. ``tests/test_backbone_contract.py`` checks every implementation: shapes,
normalised embeddings, gradients into each parameter group, and that encoding from token
embeddings equals encoding from token ids.

What a checkpoint records to rebuild a backbone: its config ``{_target_: <class>, **kwargs}``
inside the method's hyper-parameters. The class must be in :mod:`clipft.utils.safe_targets`
(register new ones there or with ``register_safe_target``) and its kwargs must be plain data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class VisionLanguageBackbone(Protocol):
    """A CLIP-style dual encoder.

    Attributes:
        embed_dim: width of the shared embedding space.
        preprocessing: ``{image_size, mean, std}`` the image tower expects (a
            :class:`clipft.utils.constants.Preprocessing`, or any mapping with those keys).
        is_pretrained: False when the weights are a random initialisation that the config cannot
            reproduce (there is then no zero-shot model for WiSE-FT to interpolate towards).
    """

    embed_dim: int
    preprocessing: Mapping[str, Any]
    is_pretrained: bool

    @property
    def logit_scale(self) -> nn.Parameter:
        """Learnable log inverse temperature (CLIP's ``logit_scale``)."""

    @property
    def logit_bias(self) -> nn.Parameter | None:
        """SigLIP's learnable logit bias of the sigmoid loss; None for softmax-pretrained models."""

    @property
    def image_tower(self) -> nn.Module: ...

    @property
    def text_tower(self) -> nn.Module: ...

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``{input_ids, attention_mask?}``, the keyword arguments of :meth:`encode_text`."""

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, embed_dim)``, L2-normalised unless ``normalize=False``."""

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Token ids -> ``(B, embed_dim)``, L2-normalised unless ``normalize=False``."""

    def token_embedding(self) -> nn.Embedding:
        """The text tower's token-embedding table (prompt learning builds its inputs from it)."""

    def encode_text_embeddings(
        self,
        token_embeddings: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Encode ``(B, L, width)`` token embeddings in place of ``token_embedding()(input_ids)``;
        ``input_ids`` still give the positions the tower pools (e.g. CLIP's end-of-text token)."""

    def image_parameters(self) -> list[nn.Parameter]: ...

    def text_parameters(self) -> list[nn.Parameter]: ...

    def projection_parameters(self) -> list[nn.Parameter]:
        """The projections into the shared space ([] when they belong to a tower's parameters)."""


@runtime_checkable
class ImageBackbone(Protocol):
    """A pooled-feature image model for the CNN transfer baseline (:class:`clipft.methods.CNNTransfer`)."""

    feature_dim: int

    @property
    def preprocessing(self) -> Mapping[str, Any]: ...

    def blocks(self) -> list[nn.Module]:
        """The body's stages, input to output (two-stage fine-tuning unfreezes from the end)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, feature_dim)``."""


class TokenEmbeddingPath:
    """:meth:`VisionLanguageBackbone.encode_text_embeddings` for any backbone whose ``token_embedding()``
    is the table its ``encode_text`` looks tokens up in (mixed into every clipft backbone)."""

    def encode_text_embeddings(
        self,
        token_embeddings: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        with replaced_output(self.token_embedding(), token_embeddings):
            return self.encode_text(input_ids, attention_mask, normalize)


@contextlib.contextmanager
def replaced_output(module: nn.Module, output: torch.Tensor) -> Iterator[None]:
    """Within the block, ``module(...)`` returns ``output`` (gradients flow into ``output``).

    How every backbone implements :meth:`VisionLanguageBackbone.encode_text_embeddings`: the
    tower's own forward runs unchanged (positions, masks, pooling, projection), only the
    token-embedding lookup is swapped, so the embedding path equals the token-id path by construction.
    """

    def hook(_module: nn.Module, _inputs: Any, produced: torch.Tensor) -> torch.Tensor:
        if produced.shape != output.shape:
            raise ValueError(
                f"token embeddings of shape {tuple(output.shape)} do not match the token ids' {tuple(produced.shape)}"
            )
        return output.to(produced.dtype)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
