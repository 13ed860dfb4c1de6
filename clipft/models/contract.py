"""The backbone contracts every method is written against, so methods never probe with ``hasattr``.

:class:`VisionLanguageBackbone` is what a CLIP-style backbone must give (HF CLIP, open_clip and
the dual encoder implement all of it); :class:`ImageBackbone` is the CNN transfer baseline's
smaller contract; :class:`DeepPromptBackbone` is an optional capability (prompt tokens inside the towers'
layers: MaPLe, PromptSRC; HF CLIP has it), :class:`PooledImageBackbone` another (the image tower before its
final projection: ProLIP's feature bank; HF CLIP and the dual encoder have it). ``tests/test_backbone_contract.py`` checks every implementation: shapes,
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

from clipft.errors import ConfigError


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


# ---------------------------------------------------------------------------- deep prompts (optional)
@runtime_checkable
class DeepPromptBackbone(Protocol):
    """Optional capability: learnable tokens at the input of a tower's first J layers (MaPLe, PromptSRC).

    A backbone without it takes prompts at the text tower's input only (CoOp's
    :meth:`VisionLanguageBackbone.encode_text_embeddings`); :func:`deep_prompt_support` reads 0 for it.
    """

    def deep_prompt_support(self) -> dict[str, int]:
        """``{"text": n, "image": n}``: how many of each tower's layers can take prompt tokens (0: none)."""

    def deep_prompt_widths(self) -> dict[str, int]:
        """``{"text": width, "image": width}``: the width of one prompt token in each tower."""

    def encode_text_deep_prompts(
        self,
        token_embeddings: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        first: int,
        deep_prompts: list[torch.Tensor],
        normalize: bool = True,
    ) -> torch.Tensor:
        """:meth:`VisionLanguageBackbone.encode_text_embeddings` (layer 0's prompts are in ``token_embeddings``),
        and at the input of layer ``k`` (1 <= k <= len(deep_prompts)) the hidden states at positions
        ``first .. first + n - 1`` replaced by ``deep_prompts[k - 1]`` (``(n, width)`` or ``(B, n, width)``)."""

    def encode_image_deep_prompts(
        self, pixel_values: torch.Tensor, prompts: list[torch.Tensor], normalize: bool = True
    ) -> torch.Tensor:
        """:meth:`VisionLanguageBackbone.encode_image` with ``prompts[0]`` (``(n, width)``) appended after the
        patch tokens (positions added, before any pre-norm) and ``prompts[k]`` replacing those ``n`` tokens at
        the input of layer ``k``; the tower pools its class token as before."""


@runtime_checkable
class PooledImageBackbone(Protocol):
    """Optional capability: the image tower's output before its final projection, and that projection.

    ``encode_image(x, normalize) == project_image(encode_image_pooled(x), normalize)``. ProLIP trains only the
    projection, so a feature bank of pooled rows serves it (its reference stores exactly these features).
    """

    def encode_image_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, width)``: the pooled output the final projection maps into the shared space."""

    def project_image(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """The final projection of :meth:`encode_image_pooled`'s output (normalised unless told not to)."""


def deep_prompt_support(backbone: Any) -> dict[str, int]:
    """The backbone's :meth:`DeepPromptBackbone.deep_prompt_support`, or ``{"text": 0, "image": 0}``."""
    if isinstance(backbone, DeepPromptBackbone):
        support = backbone.deep_prompt_support()
        return {"text": int(support.get("text", 0)), "image": int(support.get("image", 0))}
    return {"text": 0, "image": 0}


def deep_prompt_widths(backbone: Any) -> dict[str, int]:
    """The backbone's :meth:`DeepPromptBackbone.deep_prompt_widths` (ConfigError for a backbone without deep prompts)."""
    if not isinstance(backbone, DeepPromptBackbone):
        raise ConfigError(f"{type(backbone).__name__} takes no deep prompts (it is not a DeepPromptBackbone)")
    return {k: int(v) for k, v in backbone.deep_prompt_widths().items()}


def check_deep_prompt_depths(backbone: Any, method: str, depths: Mapping[str, tuple[int, str]], text_only_hint: str) -> None:
    """ConfigError unless ``backbone`` takes prompts in as many layers of each tower as ``depths`` asks.

    ``depths``: ``{"text": (J, its config key), "image": (J, its config key)}``; a text depth of 1 is the
    input only (:meth:`VisionLanguageBackbone.encode_text_embeddings`, every backbone). ``text_only_hint``:
    the override that asks for no image prompts, named when the image tower takes none.
    """
    support = deep_prompt_support(backbone)
    name = type(backbone).__name__
    image, image_key = depths.get("image", (0, ""))
    text, text_key = depths.get("text", (0, ""))
    if image > 0 and support["image"] == 0:
        raise ConfigError(
            f"{method} puts prompt tokens into the image tower ({image_key}={image}), but {name}'s image tower "
            f"takes none (deep_prompt_support: image 0: a CNN, or a backbone without deep prompts). Use the text-only "
            f"variant ({text_only_hint}) "
            "or a ViT backbone (clip_backbone@model.clip=hf_clip)"
        )
    if text > 1 and support["text"] == 0:
        raise ConfigError(
            f"{method} puts prompt tokens into {text} text layers ({text_key}={text}), but {name}'s text tower "
            f"takes them at its input only (deep_prompt_support: text 0): set {text_key}=1"
        )
    for tower, (depth, key) in (("text", (text, text_key)), ("image", (image, image_key))):
        if depth > max(support[tower], 1 if tower == "text" else 0):
            raise ConfigError(
                f"{method}: {key}={depth} asks for prompts in {depth} {tower} layers, but {name}'s {tower} tower "
                f"has {support[tower]} layers; choose {key} <= {support[tower]}"
            )


@contextlib.contextmanager
def prompted_layers(layers: list[nn.Module], prompts: list[torch.Tensor], first: int) -> Iterator[None]:
    """Within the block, the input of ``layers[k]`` (k >= 1) has its tokens ``first .. first + n - 1``
    replaced by ``prompts[k - 1]`` (a negative ``first`` counts from the end): the deep prompts
    of VPT / MaPLe / PromptSRC, which replace the previous layer's outputs at the prompt positions."""
    if len(prompts) > len(layers) - 1:
        raise ValueError(f"{len(prompts)} deep prompts for a tower of {len(layers)} layers (layer 0 takes none here)")
    handles = []
    for layer, prompt in zip(layers[1:], prompts):
        handles.append(layer.register_forward_pre_hook(_replacing_hook(prompt, first), with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _replacing_hook(prompt: torch.Tensor, first: int) -> Any:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (splice_tokens(args[0], prompt, first), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": splice_tokens(kwargs["hidden_states"], prompt, first)}

    return hook


def splice_tokens(hidden: torch.Tensor, prompt: torch.Tensor, first: int) -> torch.Tensor:
    """``hidden`` ``(B, L, width)`` with tokens ``first .. first + n - 1`` replaced by ``prompt`` (``(n, width)`` or ``(B, n, width)``)."""
    n = prompt.shape[-2]
    start = first if first >= 0 else hidden.shape[1] + first
    if start < 0 or start + n > hidden.shape[1]:
        raise ValueError(f"prompt tokens {start}..{start + n - 1} do not fit a sequence of {hidden.shape[1]}")
    prompt = prompt.to(hidden.dtype).expand(hidden.shape[0], -1, -1)
    return torch.cat([hidden[:, :start], prompt, hidden[:, start + n :]], dim=1)


@contextlib.contextmanager
def appended_output(module: nn.Module, tokens: torch.Tensor) -> Iterator[None]:
    """Within the block, ``module(...)``'s ``(B, L, width)`` output has ``tokens`` (``(n, width)``) appended: ``(B, L + n, width)``."""

    def hook(_module: nn.Module, _inputs: Any, produced: torch.Tensor) -> torch.Tensor:
        extra = tokens.to(produced.dtype).expand(produced.shape[0], -1, -1)
        return torch.cat([produced, extra], dim=1)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
