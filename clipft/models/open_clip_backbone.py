"""open_clip models (OpenAI, LAION, DataComp, MetaCLIP weights) behind the CLIP backbone interface.

``model_name`` is a built-in architecture (``ViT-B-32``) with ``pretrained`` a tag
(``laion2b_s34b_b79k``, ``metaclip_400m``, ``openai``) or a local weights file; or
``hf-hub:org/repo``; or a local folder holding ``open_clip_config.json`` and weights (the
``local-dir:`` schema; a plain folder path is accepted too). Offline, use the last two forms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.models.contract import TokenEmbeddingPath
from clipft.models.remote_code import RemoteCodeRefused, check_hf_folder, remote_code_off
from clipft.utils.arguments import check_image_size
from clipft.utils.constants import Preprocessing
from clipft.utils.file_gate import gate_file_config, read_json_mapping


class OpenCLIPBackbone(TokenEmbeddingPath, nn.Module):
    """Any open_clip model, by name + pretrained tag, hub id or local folder.

    ``gradient_checkpointing``: recompute each transformer block in backward (open_clip's
    ``set_grad_checkpointing``, both towers) to trade compute for memory on large towers.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = None,
        image_size: int | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        cache_dir: str | None = None,
        force_quick_gelu: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_image_size(image_size, "image_size")
        import open_clip

        name = str(model_name)
        if Path(name).expanduser().is_dir():
            check_local_dir(Path(name).expanduser())
            name = f"local-dir:{Path(name).expanduser()}"
        try:
            with remote_code_off():  # open_clip's HF text tower and tokenizer never run a folder's code
                self.model = open_clip.create_model(
                    name, pretrained=pretrained, cache_dir=cache_dir, force_quick_gelu=force_quick_gelu
                )
                self.tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
        except RemoteCodeRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - unknown name/tag, no network, bad file all end here
            raise ConfigError(
                f"open_clip model {model_name!r} (pretrained={pretrained!r}) could not be built: {exc}. Check the "
                "name with open_clip.list_pretrained(); offline, pass a local folder with open_clip_config.json "
                "and weights (model.clip.model_name=/path/to/folder) or a weights file as pretrained."
            ) from exc
        if gradient_checkpointing:
            self.model.set_grad_checkpointing(True)
        pre = dict(getattr(self.model.visual, "preprocess_cfg", {}) or {})
        size = pre.get("size", 224)
        size = size[0] if isinstance(size, (list, tuple)) else size
        self.preprocessing = Preprocessing.resolve(image_size or size, image_mean or pre.get("mean"), image_std or pre.get("std"))
        self.embed_dim = int(getattr(self.model.visual, "output_dim", 0) or self.model.text_projection.shape[-1])
        self.name_or_path = str(model_name)
        # a bare architecture name without weights is a random, unreproducible initialisation
        self.is_pretrained = pretrained is not None or name.startswith(("local-dir:", "hf-hub:"))

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> nn.Parameter | None:
        """open_clip's SigLIP models carry one; CLIP models do not."""
        return getattr(self.model, "logit_bias", None)

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts))
        return {"input_ids": ids.to(device) if device is not None else ids}

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.model.encode_image(pixel_values, normalize=normalize)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        return self.model.encode_text(input_ids, normalize=normalize)

    def token_embedding(self) -> nn.Embedding:
        table = getattr(self.model, "token_embedding", None)
        if table is None:  # CustomTextCLIP: the HF text tower's own table
            table = self.model.text.transformer.get_input_embeddings()
        return table


    @property
    def image_tower(self) -> nn.Module:
        return self.model.visual

    @property
    def text_tower(self) -> nn.Module:
        if hasattr(self.model, "text"):  # CustomTextCLIP (HF text towers, CoCa, ...)
            return self.model.text
        return nn.ModuleList([self.model.token_embedding, self.model.transformer, self.model.ln_final])

    def image_parameters(self) -> list[nn.Parameter]:
        return list(self.model.visual.parameters())

    def text_parameters(self) -> list[nn.Parameter]:
        image_ids = {id(p) for p in self.model.visual.parameters()}
        return [
            p
            for n, p in self.model.named_parameters()
            if id(p) not in image_ids and n not in ("logit_scale", "logit_bias")
        ]

    def projection_parameters(self) -> list[nn.Parameter]:
        """open_clip's projections were pretrained with the towers: they share the towers' rates."""
        return []


TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def save_tiny_open_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """A random tiny open_clip model as a ``local-dir`` folder (config + safetensors) for tests."""
    import open_clip
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_OPEN_CLIP_CONFIG, "preprocess_cfg": {"size": 32}}
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "open_clip_model.safetensors"))
    return out_dir


def check_local_dir(folder: Path) -> None:
    """A ``local-dir`` model: its ``open_clip_config.json`` passes the one gate, and an HF text tower it
    names as a local folder may not run its own code (:mod:`clipft.models.remote_code`)."""
    config_file = folder / "open_clip_config.json"
    if not config_file.is_file():
        return  # open_clip's own error names what is missing
    config = gate_file_config(read_json_mapping(config_file, ConfigError), str(config_file), "plain", "open_clip_config")
    text_cfg = (config.get("model_cfg") or {}).get("text_cfg") or {}
    hf_name = text_cfg.get("hf_model_name") if isinstance(text_cfg, dict) else None
    if isinstance(hf_name, str):
        local = Path(hf_name).expanduser()
        check_hf_folder(local if local.is_absolute() else folder / local, what="open_clip HF text tower")
