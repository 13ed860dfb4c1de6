"""Dual encoders from separately pretrained towers (LiT-style), behind the CLIP backbone interface.

An ImageNet CNN (torchvision/timm) and a sentence encoder (HF) are joined by two linear
projections into a shared embedding space and trained with the same FLYP loss as a CLIP.
The towers were never aligned, so zero-shot accuracy starts near chance; ``lock_image``
(LiT: "locked image, unlocked text") keeps the image tower and its BatchNorm statistics
frozen and teaches the text side to read the image features.

Projections are initialised from ``init_seed``, so building the same config twice gives the
same untrained model: the reference WiSE-FT interpolates towards.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.models.contract import TokenEmbeddingPath
from clipft.models.towers import HFTextTower, build_image_tower
from clipft.utils.arguments import check_image_size
from clipft.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Preprocessing


class DualEncoderBackbone(TokenEmbeddingPath, nn.Module):
    """Image tower + text tower + projections + learnable temperature.

    Args:
        image_tower: ``{source: torchvision | timm, name: mobilenet_v2, pretrained: false | true | path}``.
        text_tower: ``{name_or_path: hub id or folder, max_length: 64}``.
        embed_dim: shared embedding width.
        lock_image / lock_text: freeze that tower (weights and normalisation statistics).
        image_size, image_mean, image_std: preprocessing (defaults: the image tower's, at 224 px).
        logit_scale_init: initial inverse temperature (CLIP: 1/0.07).
        init_seed: seed of the projection initialisation.
        name_or_path: a backbone folder written by :func:`clipft.models.backbone_folder.save_backbone_folder`
            (e.g. an aligned "sign-CLIP"); it sets the towers, ``embed_dim`` and preprocessing and loads the weights.
    """

    def __init__(
        self,
        image_tower: dict[str, Any] | None = None,
        text_tower: dict[str, Any] | None = None,
        embed_dim: int = 256,
        lock_image: bool = False,
        lock_text: bool = False,
        image_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        logit_scale_init: float = 1 / 0.07,
        init_seed: int = 0,
        name_or_path: str | None = None,
    ) -> None:
        super().__init__()
        from_folder = None
        if name_or_path:  # a saved backbone folder (clipft.models.backbone_folder): it sets the towers
            from clipft.models.backbone_folder import TEXT_DIR, read_folder_config

            from_folder = read_folder_config(name_or_path)
            image_tower = {**from_folder["image_tower"], "pretrained": False}
            max_length = (text_tower or {}).get("max_length") or from_folder.get("text_tower", {}).get("max_length", 64)
            text_tower = {"max_length": int(max_length), "name_or_path": str(Path(str(name_or_path)).expanduser() / TEXT_DIR)}
            embed_dim = int(from_folder["embed_dim"])
            pre = from_folder["preprocessing"]
            image_size, image_mean, image_std = image_size or pre.get("image_size"), image_mean or pre.get("mean"), image_std or pre.get("std")
        if not isinstance(image_tower, dict) or "name" not in image_tower:
            raise ConfigError(f"image_tower must be a mapping with a 'name', got {image_tower!r}")
        if not isinstance(text_tower, dict) or not text_tower.get("name_or_path"):
            raise ConfigError(f"text_tower must be a mapping with a 'name_or_path', got {text_tower!r}")
        if int(embed_dim) < 1:
            raise ConfigError(f"embed_dim must be positive, got {embed_dim}")
        check_image_size(image_size, "image_size")
        check_keys(build_image_tower, image_tower, "image_tower")
        check_keys(HFTextTower, text_tower, "text_tower")
        self.tower_spec = {"image_tower": dict(image_tower), "text_tower": dict(text_tower)}
        self.visual = build_image_tower(**image_tower)
        self.text = HFTextTower(**text_tower)
        generator = torch.Generator().manual_seed(int(init_seed))
        self.visual_projection = _seeded_linear(self.visual.feature_dim, int(embed_dim), generator)
        self.text_projection = _seeded_linear(self.text.feature_dim, int(embed_dim), generator)
        self._logit_scale = nn.Parameter(torch.tensor(math.log(float(logit_scale_init))))
        self.embed_dim = int(embed_dim)
        self.is_pretrained = True  # towers from files/hub, projections seeded: the config rebuilds the start
        if from_folder is not None:
            from clipft.models.backbone_folder import load_folder_weights

            load_folder_weights(self, name_or_path)
        self.lock_image, self.lock_text = bool(lock_image), bool(lock_text)
        if self.lock_image:
            self.visual.requires_grad_(False)
        if self.lock_text:
            self.text.requires_grad_(False)
        self.train()  # locked towers start in eval mode too (Lightning restores modes, it does not call train())
        tower_pre = dict(getattr(self.visual, "preprocessing", {}) or {})
        self.preprocessing = Preprocessing.resolve(
            image_size or tower_pre.get("image_size"), image_mean or tower_pre.get("mean"), image_std or tower_pre.get("std"),
            default_mean=IMAGENET_DEFAULT_MEAN, default_std=IMAGENET_DEFAULT_STD,
        )

    # ------------------------------------------------------------------ interface
    @property
    def logit_scale(self) -> nn.Parameter:
        return self._logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        return None  # softmax-pretrained: no sigmoid-loss bias

    def train(self, mode: bool = True) -> DualEncoderBackbone:
        """Locked towers stay in eval mode (BatchNorm statistics and dropout frozen too)."""
        super().train(mode)
        if self.lock_image:
            self.visual.eval()
        if self.lock_text:
            self.text.eval()
        return self

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        tokens = self.text.tokenize(texts)
        return {k: v.to(device) for k, v in tokens.items()} if device is not None else tokens

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.project_image(self.encode_image_pooled(pixel_values), normalize)

    def encode_image_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled features, before ``visual_projection`` (contract.PooledImageBackbone)."""
        return self.visual(pixel_values)

    def project_image(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.visual_projection(pooled)
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        feats = self.text_projection(self.text(input_ids, attention_mask))
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def token_embedding(self) -> nn.Embedding:
        return self.text.model.get_input_embeddings()

    def deep_prompt_support(self) -> dict[str, int]:
        """No deep prompts (:class:`clipft.models.contract.DeepPromptBackbone`): the image tower is a CNN (no
        tokens to add) and the text tower takes prompts at its input only (``encode_text_embeddings``)."""
        return {"text": 0, "image": 0}


    @property
    def image_tower(self) -> nn.Module:
        return self.visual

    @property
    def text_tower(self) -> nn.Module:
        return self.text

    def image_parameters(self) -> list[nn.Parameter]:
        return list(self.visual.parameters()) + list(self.visual_projection.parameters())

    def text_parameters(self) -> list[nn.Parameter]:
        return list(self.text.parameters()) + list(self.text_projection.parameters())

    def projection_parameters(self) -> list[nn.Parameter]:
        """The freshly initialised projections (usually trained with a larger LR than the towers)."""
        return list(self.visual_projection.parameters()) + list(self.text_projection.parameters())


def _seeded_linear(in_dim: int, out_dim: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(out_dim, in_dim, generator=generator) / math.sqrt(in_dim))
    return layer


def check_keys(builder: Any, settings: dict[str, Any], name: str) -> None:
    """Every key of ``settings`` is an argument of ``builder``: one line naming the unknown ones (not a TypeError)."""
    import inspect

    accepted = [p for p in inspect.signature(builder).parameters if p not in ("self", "args", "kwargs")]
    unknown = sorted(str(k) for k in settings if k not in accepted)
    if unknown:
        raise ConfigError(f"{name} has unknown key(s) {unknown}; accepted: {accepted}")
