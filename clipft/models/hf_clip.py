"""HF transformers CLIP behind the backbone interface every clipft module uses.

A backbone is an ``nn.Module`` with ``encode_image(pixels)``, ``encode_text(tokens)``,
``tokenize(texts)``, a learnable ``logit_scale`` (log-temperature, as in CLIP) and
``preprocessing`` (image size, mean, std) taken from the checkpoint's processor config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.models.contract import TokenEmbeddingPath, appended_output, prompted_layers, replaced_output
from clipft.models.remote_code import check_hf_folder
from clipft.utils.arguments import check_image_size
from clipft.utils.constants import Preprocessing
from clipft.utils.size_limits import check_sizes


class HFCLIPBackbone(TokenEmbeddingPath, nn.Module):
    """Any HF CLIP checkpoint, by hub id or local directory, or a random CLIP from a config dict.

    Args:
        name_or_path: hub id (``openai/clip-vit-base-patch32``) or a local folder written by
            ``save_pretrained``. Wins over ``config`` when both are given.
        config: ``CLIPConfig`` kwargs (merged over :data:`TINY_CLIP_CONFIG`) for a randomly
            initialised model with a byte-level tokenizer; used when ``name_or_path`` is null.
        image_size, image_mean, image_std: override the checkpoint's preprocessing.
        gradient_checkpointing: trade compute for memory on large towers.
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        image_size: int | None = None,
        image_mean: list[float] | tuple[float, ...] | None = None,
        image_std: list[float] | tuple[float, ...] | None = None,
        max_text_length: int | None = None,
        revision: str | None = None,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = "sdpa",
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        from transformers import CLIPModel

        if name_or_path is None and config is None:
            raise ConfigError(
                "set either name_or_path (hub id or local folder, e.g. "
                "openai/clip-vit-base-patch32) or config (a CLIPConfig dict for a random model)"
            )
        processor_cfg: dict[str, Any] = {}
        if name_or_path is not None:
            name_or_path = str(name_or_path)
            trust = bool(trust_remote_code)
            self.model = _load_pretrained(CLIPModel, name_or_path, revision, attn_implementation, trust)
            self.tokenizer = _load_pretrained_tokenizer(name_or_path, revision, trust)
            processor_cfg = _load_processor_config(name_or_path, revision, trust_remote_code=trust)
        else:
            from clipft.models.byte_tokenizer import byte_level_tokenizer
            from clipft.models.tiny_clip import build_clip_config

            check_sizes(dict(config), "config")  # before allocating what a (file's) config describes
            clip_config = build_clip_config(dict(config))
            if attn_implementation:
                clip_config._attn_implementation = attn_implementation
            self.model = CLIPModel(clip_config)
            self.tokenizer = byte_level_tokenizer(clip_config.text_config.max_position_embeddings)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()

        vision = self.model.config.vision_config
        check_image_size(image_size, "image_size")
        size = image_size or _processor_size(processor_cfg) or vision.image_size
        self.preprocessing = Preprocessing.resolve(
            size, image_mean or processor_cfg.get("image_mean"), image_std or processor_cfg.get("image_std")
        )
        self.max_text_length = int(
            max_text_length or min(self.model.config.text_config.max_position_embeddings, 77)
        )
        self.embed_dim = int(self.model.config.projection_dim)
        self.name_or_path = name_or_path
        self.is_pretrained = name_or_path is not None  # a config-only CLIP is a random initialisation

    # ------------------------------------------------------------------ interface
    @property
    def logit_scale(self) -> nn.Parameter:
        """Log of the softmax temperature's inverse, learnable, as in CLIP."""
        return self.model.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return None  # softmax-pretrained: no sigmoid-loss bias

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
        )
        out = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        return out

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.project_image(self.encode_image_pooled(pixel_values), normalize)

    def encode_image_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision transformer's pooled class token, before ``visual_projection`` (contract.PooledImageBackbone)."""
        return self.model.vision_model(pixel_values=pixel_values).pooler_output

    def project_image(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.model.visual_projection(pooled)
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        pooled = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        feats = self.model.text_projection(pooled)
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def token_embedding(self) -> nn.Embedding:
        return self.model.text_model.embeddings.token_embedding

    # ------------------------------------------------------------------ deep prompts (contract.DeepPromptBackbone)
    def deep_prompt_support(self) -> dict[str, int]:
        """Both towers are transformers: every layer can take prompt tokens."""
        return {"text": len(self.model.text_model.encoder.layers), "image": len(self.model.vision_model.encoder.layers)}

    def deep_prompt_widths(self) -> dict[str, int]:
        return {"text": int(self.model.config.text_config.hidden_size), "image": int(self.model.config.vision_config.hidden_size)}

    def encode_text_deep_prompts(
        self,
        token_embeddings: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        first: int,
        deep_prompts: list[torch.Tensor],
        normalize: bool = True,
    ) -> torch.Tensor:
        """HF's own text forward (positions, causal and padding masks, end-of-text pooling), with the layers'
        inputs spliced by forward pre-hooks: the same code path as :meth:`encode_text`."""
        layers = list(self.model.text_model.encoder.layers)
        with replaced_output(self.token_embedding(), token_embeddings), prompted_layers(layers, deep_prompts, first):
            return self.encode_text(input_ids, attention_mask, normalize)

    def encode_image_deep_prompts(
        self, pixel_values: torch.Tensor, prompts: list[torch.Tensor], normalize: bool = True
    ) -> torch.Tensor:
        """The prompts follow the patch tokens (after the position embeddings, before ``pre_layrnorm``),
        as VPT and MaPLe append them; the class token is pooled as before."""
        if not prompts:
            return self.encode_image(pixel_values, normalize)
        vision = self.model.vision_model
        n = prompts[0].shape[-2]
        with appended_output(vision.embeddings, prompts[0]), prompted_layers(list(vision.encoder.layers), prompts[1:], -n):
            return self.encode_image(pixel_values, normalize)


    @property
    def image_tower(self) -> nn.Module:
        return self.model.vision_model

    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    def image_parameters(self) -> list[nn.Parameter]:
        return list(self.model.vision_model.parameters()) + list(self.model.visual_projection.parameters())

    def text_parameters(self) -> list[nn.Parameter]:
        return list(self.model.text_model.parameters()) + list(self.model.text_projection.parameters())

    def projection_parameters(self) -> list[nn.Parameter]:
        """CLIP's projections were pretrained with the towers: they share the towers' rates."""
        return []


def _offline_hint(name_or_path: str) -> str:
    return (
        f"could not load CLIP {name_or_path!r}: it is not a local folder with a config.json and it "
        "could not be fetched from the Hugging Face hub. Pass a local folder written by "
        "save_pretrained (model.clip.name_or_path=/path/to/folder), check the hub id's spelling, "
        "or go online (unset HF_HUB_OFFLINE)."
    )


def _load_pretrained(
    cls: Any, name_or_path: str, revision: str | None, attn_implementation: str | None, trust_remote_code: bool = False
):
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": bool(trust_remote_code)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    local = Path(os.path.expanduser(name_or_path))
    if local.exists() and not (local / "config.json").exists():
        raise ConfigError(f"name_or_path={name_or_path!r} is a folder but holds no config.json")
    check_hf_folder(local, trust_remote_code)  # before transformers reads it: no prompt, no code, bounded sizes
    try:
        return cls.from_pretrained(str(local) if local.exists() else name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ConfigError(_offline_hint(name_or_path) + f" ({type(exc).__name__}: {exc})") from exc


def _load_pretrained_tokenizer(name_or_path: str, revision: str | None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    check_hf_folder(name_or_path, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=bool(trust_remote_code))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{name_or_path!r} has CLIP weights but no usable tokenizer files "
            f"(tokenizer.json / vocab.json + merges.txt): {exc}"
        ) from exc


def _load_processor_config(
    name_or_path: str, revision: str | None, processor: str = "CLIPImageProcessor", trust_remote_code: bool = False
) -> dict[str, Any]:
    """The checkpoint's image-processor settings, or {} when it ships none (defaults apply).

    ``processor``: the transformers class that reads them (``AutoImageProcessor`` for other families).
    """
    import transformers

    try:
        loader = getattr(transformers, processor)
        return loader.from_pretrained(name_or_path, revision=revision, trust_remote_code=bool(trust_remote_code)).to_dict()
    except (OSError, ValueError):
        return {}


def _processor_size(processor_cfg: dict[str, Any]) -> int | None:
    crop = processor_cfg.get("crop_size")
    if isinstance(crop, dict) and crop.get("height"):
        return int(crop["height"])
    if isinstance(crop, int):
        return crop
    size = processor_cfg.get("size")
    if isinstance(size, dict):
        return size.get("shortest_edge") or size.get("height")
    return size if isinstance(size, int) else None
