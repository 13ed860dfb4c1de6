"""A small randomly initialised CLIP: the embedded default, and the model every test uses.

``save_tiny_clip(dir)`` writes a complete HF checkpoint folder (config, weights, tokenizer,
image processor) so tests load it through exactly the code path a hub id takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipft.models.byte_tokenizer import BYTE_VOCAB_SIZE

# Sized to train in about a minute on 2 CPU cores on 32 px images.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "projection_dim": 64,
    "logit_scale_init_value": 2.6592,
    "text_config": {
        "vocab_size": BYTE_VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 48,
        "bos_token_id": 256,
        "eos_token_id": 257,
        "pad_token_id": 258,
    },
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 32,
        "patch_size": 4,
    },
}


def build_clip_config(overrides: dict[str, Any] | None = None):
    """A ``transformers.CLIPConfig`` from the tiny defaults deep-merged with ``overrides``."""
    from transformers import CLIPConfig

    cfg = _deep_merge(TINY_CLIP_CONFIG, overrides or {})
    return CLIPConfig(**cfg)


def save_tiny_clip(out_dir: str | Path, overrides: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """Save a random tiny CLIP with tokenizer and image processor as a HF checkpoint folder."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from clipft.models.byte_tokenizer import byte_level_tokenizer

    out_dir = Path(out_dir)
    config = build_clip_config(overrides)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    model.save_pretrained(out_dir)
    byte_level_tokenizer(config.text_config.max_position_embeddings).save_pretrained(out_dir)
    size = config.vision_config.image_size
    CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    ).save_pretrained(out_dir)
    return out_dir


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
