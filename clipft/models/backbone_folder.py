"""A dual encoder as a folder, loadable by path like a hub id ("sign-CLIP").

    <folder>/clipft_backbone.json   what to rebuild: tower names, embed_dim, preprocessing (plain JSON)
    <folder>/model.safetensors      image tower, projections, temperature (no pickle)
    <folder>/text/                  the text tower and its tokenizer (HF ``save_pretrained``)

``DualEncoderBackbone(name_or_path=<folder>)`` (or ``model.clip.name_or_path=<folder>`` with
``clip_backbone@model.clip=sign_clip``) rebuilds it; every clipft CLIP method and ``clipft-ask``
take it as they take a hub id. Nothing in the folder is code: the JSON names only a torchvision
or timm model and the weights are safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipft.errors import CheckpointError, ConfigError
from clipft.utils.file_gate import gate_file_config, read_json_mapping

CONFIG_NAME = "clipft_backbone.json"
WEIGHTS_NAME = "model.safetensors"
TEXT_DIR = "text"
FORMAT = "clipft-dual-encoder"
TEXT_PREFIX = "text."


def read_folder_config(path: str | Path) -> dict[str, Any]:
    folder = Path(str(path)).expanduser()
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ConfigError(
            f"name_or_path={str(path)!r} is not a clipft backbone folder (no {CONFIG_NAME}); "
            "write one with python -m clipft.cli.export_backbone CKPT OUT"
        )
    config = read_json_mapping(file, ConfigError)
    if config.get("format") != FORMAT:
        raise ConfigError(f"{str(file)!r} is not a {FORMAT} config (format={config.get('format')!r})")
    gate_file_config(config, str(file), "plain", CONFIG_NAME)  # the one gate: plain data, bounded sizes, no code
    for key in ("image_tower", "embed_dim", "preprocessing"):
        if key not in config:
            raise ConfigError(f"{str(file)!r} lacks {key!r}")
    return config


def save_backbone_folder(backbone: Any, out_dir: str | Path) -> Path:
    """Write a :class:`~clipft.models.DualEncoderBackbone` as a folder (see the module docstring)."""
    from safetensors.torch import save_file

    from clipft.utils.io import atomic_write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = getattr(backbone, "tower_spec", None)
    if not spec:
        raise CheckpointError(f"{type(backbone).__name__} cannot be saved as a backbone folder (only dual encoders)")
    backbone.text.model.save_pretrained(out_dir / TEXT_DIR, safe_serialization=True)
    backbone.text.tokenizer.save_pretrained(out_dir / TEXT_DIR)
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items() if not k.startswith(TEXT_PREFIX)}
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": FORMAT})
    atomic_write_json(
        out_dir / CONFIG_NAME,
        {
            "format": FORMAT,
            "version": 1,
            "image_tower": {k: v for k, v in spec["image_tower"].items() if k != "pretrained"},
            "text_tower": {"max_length": int(backbone.text.max_length)},
            "embed_dim": int(backbone.embed_dim),
            "preprocessing": dict(backbone.preprocessing),
            "logit_scale": float(backbone.logit_scale.detach().exp()),
        },
    )
    return out_dir


def load_folder_weights(backbone: torch.nn.Module, path: str | Path) -> None:
    """The folder's non-text weights into ``backbone`` (the text tower loaded itself from ``text/``)."""
    from safetensors.torch import load_file

    file = Path(str(path)).expanduser() / WEIGHTS_NAME
    if not file.is_file():
        raise ConfigError(f"backbone folder {str(path)!r} lacks {WEIGHTS_NAME}")
    state = load_file(str(file))
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(TEXT_PREFIX)]
    if missing or unexpected:
        raise CheckpointError(
            f"{str(file)!r} does not fit its own {CONFIG_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
