"""Any transformers model that gives image and text features (``get_image_features`` / ``get_text_features``).

For dual encoders that ship their own modelling code on the hub (EVA-CLIP, jina-clip, ...):
``trust_remote_code`` must be set by the user, since it runs the repository's Python. Without it
such a model is refused with one line. A checkpoint whose hyper-parameters ask for it is
refused by clipft's checkpoint check unless the file itself is trusted (``--trust-checkpoint``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.models.contract import TokenEmbeddingPath
from clipft.models.hf_clip import _load_pretrained_tokenizer, _load_processor_config, _processor_size
from clipft.models.remote_code import check_hf_folder
from clipft.utils.arguments import check_image_size
from clipft.utils.constants import Preprocessing

IMAGE_TOWERS = ("vision_model", "visual", "vision_tower", "image_model")
TEXT_TOWERS = ("text_model", "text", "text_tower", "language_model")


class HFAutoBackbone(TokenEmbeddingPath, nn.Module):
    """``transformers.AutoModel`` by hub id or folder, used through its ``get_*_features`` methods.

    Args:
        name_or_path: hub id or local folder.
        trust_remote_code: run the repository's own modelling code (DANGEROUS: only for repositories you trust).
        image_size, image_mean, image_std: override the processor's preprocessing.
        max_text_length: prompt token limit.
    """

    def __init__(
        self,
        name_or_path: str,
        trust_remote_code: bool = False,
        image_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        max_text_length: int = 77,
        revision: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        check_image_size(image_size, "image_size")
        check_hf_folder(str(name_or_path), bool(trust_remote_code))
        try:
            self.model = AutoModel.from_pretrained(str(name_or_path), trust_remote_code=bool(trust_remote_code), revision=revision)
        except ValueError as exc:
            if "trust_remote_code" in str(exc):
                raise ConfigError(
                    f"{name_or_path!r} ships its own modelling code: set trust_remote_code=true to run it "
                    "(DANGEROUS: it executes the repository's Python; only for repositories you trust)"
                ) from None
            raise ConfigError(f"{name_or_path!r} could not be loaded with AutoModel: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{name_or_path!r} is neither a local model folder nor reachable on the hub ({exc})") from exc
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(self.model, method, None)):
                raise ConfigError(f"{name_or_path!r} ({type(self.model).__name__}) has no {method}(): not an image-text dual encoder")
        self.tokenizer = _load_pretrained_tokenizer(str(name_or_path), revision, bool(trust_remote_code))
        self.visual = _tower(self.model, IMAGE_TOWERS, "image", name_or_path)
        self.text = _tower(self.model, TEXT_TOWERS, "text", name_or_path)
        processor = _load_processor_config(str(name_or_path), revision, trust_remote_code=bool(trust_remote_code))
        self.preprocessing = Preprocessing.resolve(
            image_size or _processor_size(processor), image_mean or processor.get("image_mean"), image_std or processor.get("image_std")
        )
        self.max_text_length = int(max_text_length)
        with torch.no_grad():
            self.embed_dim = int(self.encode_text(**self.tokenize(["a"])).shape[-1])
        self.is_pretrained = True

    @property
    def logit_scale(self) -> nn.Parameter:
        scale = getattr(self.model, "logit_scale", None)
        if not isinstance(scale, nn.Parameter):
            raise ConfigError(f"{type(self.model).__name__} has no learnable logit_scale")
        return scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        bias = getattr(self.model, "logit_bias", None)
        return bias if isinstance(bias, nn.Parameter) else None

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt")
        out = {"input_ids": tokens["input_ids"], "attention_mask": tokens.get("attention_mask")}
        out = {k: v for k, v in out.items() if v is not None}
        return {k: v.to(device) for k, v in out.items()} if device is not None else out

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = _features(self.model.get_image_features(pixel_values=pixel_values))
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
        feats = _features(self.model.get_text_features(input_ids=input_ids, **kwargs))
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def token_embedding(self) -> nn.Embedding:
        for owner in (self.text, self.model):
            try:
                table = owner.get_input_embeddings()
            except (AttributeError, NotImplementedError):
                continue
            if isinstance(table, nn.Embedding):
                return table
        raise ConfigError(f"{type(self.model).__name__} exposes no token-embedding table: prompt learning cannot use it")


    @property
    def image_tower(self) -> nn.Module:
        return self.visual

    @property
    def text_tower(self) -> nn.Module:
        return self.text

    def image_parameters(self) -> list[nn.Parameter]:
        text_ids = {id(p) for p in self.text.parameters()}
        own = [p for n, p in self.model.named_parameters() if n.split(".")[0] in (*IMAGE_TOWERS, "visual_projection")]
        return [p for p in own if id(p) not in text_ids]

    def text_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if n.split(".")[0] in (*TEXT_TOWERS, "text_projection")]

    def projection_parameters(self) -> list[nn.Parameter]:
        return []


def _tower(model: nn.Module, names: tuple[str, ...], kind: str, name_or_path: Any) -> nn.Module:
    for name in names:
        tower = getattr(model, name, None)
        if isinstance(tower, nn.Module):
            return tower
    raise ConfigError(f"{name_or_path!r}: no {kind} tower found (looked for attributes {list(names)})")


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose ``pooler_output`` is it (5)."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    raise ConfigError(f"unexpected feature output {type(output).__name__}")
