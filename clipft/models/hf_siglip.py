"""SigLIP / SigLIP 2 (transformers ``SiglipModel``) behind the backbone contract.

SigLIP was pretrained with a pairwise **sigmoid** loss and carries a learnable ``logit_bias``
next to ``logit_scale``. Fine-tune it with the loss it was pretrained with:
``model=clip_flyp clip_backbone@model.clip=siglip model.loss=sigmoid``. Its text tower pools the
last token and was trained on prompts padded to a fixed length, so prompts are padded to
``max_text_length`` (64, as the released checkpoints). The vision tower's attention-pooling head
already outputs the shared embedding (there is no separate projection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.models.contract import TokenEmbeddingPath
from clipft.models.hf_clip import _load_pretrained, _load_pretrained_tokenizer, _load_processor_config, _processor_size
from clipft.utils.arguments import check_image_size
from clipft.utils.constants import INCEPTION_MEAN, INCEPTION_STD, Preprocessing

# a random SigLIP sized like the tiny test CLIP (byte-level tokenizer, 32 px images)
TINY_SIGLIP_CONFIG: dict[str, Any] = {
    "text_config": {"vocab_size": 259, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "max_position_embeddings": 32, "pad_token_id": 258,
                    "bos_token_id": 256, "eos_token_id": 257},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": 32, "patch_size": 8},
}


class HFSiglipBackbone(TokenEmbeddingPath, nn.Module):
    """A SigLIP checkpoint by hub id or local folder (``google/siglip-base-patch16-224``), or a random one from a config.

    Args:
        name_or_path: hub id or a ``save_pretrained`` folder; wins over ``config``.
        config: ``SiglipConfig`` kwargs merged over :data:`TINY_SIGLIP_CONFIG` (random, byte-level tokenizer).
        image_size, image_mean, image_std: override the checkpoint's preprocessing.
        max_text_length: prompt length every prompt is padded to (SigLIP's training length: 64).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        image_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        max_text_length: int | None = None,
        revision: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import SiglipConfig, SiglipModel

        if name_or_path is None and config is None:
            raise ConfigError("set either name_or_path (hub id or local folder, e.g. google/siglip-base-patch16-224) or config")
        check_image_size(image_size, "image_size")
        processor: dict[str, Any] = {}
        if name_or_path is not None:
            name_or_path = str(name_or_path)
            self.model = _load_pretrained(SiglipModel, name_or_path, revision, "sdpa")
            self.tokenizer = _load_pretrained_tokenizer(name_or_path, revision)
            processor = _load_processor_config(name_or_path, revision, "AutoImageProcessor")
        else:
            from clipft.models.byte_tokenizer import byte_level_tokenizer
            from clipft.models.tiny_clip import _deep_merge

            cfg = SiglipConfig(**_deep_merge(TINY_SIGLIP_CONFIG, dict(config)))
            self.model = SiglipModel(cfg)
            self.tokenizer = byte_level_tokenizer(cfg.text_config.max_position_embeddings)
        text_cfg, vision_cfg = self.model.config.text_config, self.model.config.vision_config
        size = image_size or _processor_size(processor) or vision_cfg.image_size
        self.preprocessing = Preprocessing.resolve(
            size, image_mean or processor.get("image_mean"), image_std or processor.get("image_std"),
            default_mean=INCEPTION_MEAN, default_std=INCEPTION_STD,  # SigLIP's [-1, 1] pixels
        )
        self.max_text_length = int(max_text_length or min(text_cfg.max_position_embeddings, 64))
        self.embed_dim = int(text_cfg.projection_size if getattr(text_cfg, "projection_size", None) else text_cfg.hidden_size)
        self.name_or_path = name_or_path
        self.is_pretrained = name_or_path is not None

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter:
        return self.model.logit_bias

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_text_length,
                                return_tensors="pt")
        out = {"input_ids": tokens["input_ids"]}
        return {k: v.to(device) for k, v in out.items()} if device is not None else out

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.model.vision_model(pixel_values=pixel_values).pooler_output
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        # SigLIP attends to the padding too (it was trained that way): the mask is not passed
        feats = self.model.text_model(input_ids=input_ids).pooler_output
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def token_embedding(self) -> nn.Embedding:
        return self.model.text_model.embeddings.token_embedding


    @property
    def image_tower(self) -> nn.Module:
        return self.model.vision_model

    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    def image_parameters(self) -> list[nn.Parameter]:
        return list(self.model.vision_model.parameters())

    def text_parameters(self) -> list[nn.Parameter]:
        return list(self.model.text_model.parameters())

    def projection_parameters(self) -> list[nn.Parameter]:
        return []  # the towers' heads project, pretrained with them


def save_tiny_siglip(out_dir, seed: int = 0):
    """A random tiny SigLIP saved as a HF folder (weights, byte-level tokenizer, image processor) for tests."""
    from pathlib import Path

    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from clipft.models.byte_tokenizer import byte_level_tokenizer

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    cfg = SiglipConfig(**TINY_SIGLIP_CONFIG)
    SiglipModel(cfg).save_pretrained(out_dir)
    byte_level_tokenizer(cfg.text_config.max_position_embeddings).save_pretrained(out_dir)
    size = cfg.vision_config.image_size
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(out_dir)
    return out_dir
