"""``--format open_clip``: a ``local-dir`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors``)
that ``open_clip.create_model("local-dir:OUT")`` loads, plus the class head over ``encode_image``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import CheckpointError

CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_model.safetensors"


def write(module: nn.Module, folder: Path, pixels: torch.Tensor, reference: torch.Tensor) -> tuple[list[str], float]:
    from safetensors.torch import save_file

    from clipft.exporting.common import (
        backbone_of,
        check_logits,
        preprocessing_of,
        unshared_tensors,
        verified_linear_head,
        write_classifier,
    )
    from clipft.exporting.preprocessing import open_clip_preprocess_cfg
    from clipft.models.open_clip_backbone import OpenCLIPBackbone
    from clipft.utils.io import atomic_write_json

    backbone = backbone_of(module, "open_clip")
    if not isinstance(backbone, OpenCLIPBackbone):
        raise CheckpointError(
            f"--format open_clip writes an open_clip model, but this checkpoint's backbone is {type(backbone).__name__}; "
            "use --format hf (HF CLIP backbones), --format safetensors or --format onnx"
        )
    weight, bias = verified_linear_head(module, pixels, reference, "open_clip")
    pre = preprocessing_of(module)
    atomic_write_json(folder / CONFIG, {
        "model_cfg": model_config(backbone.name_or_path),
        # clipft's clip_eval: bilinear (not open_clip's bicubic default), short side, centre crop
        "preprocess_cfg": open_clip_preprocess_cfg(pre),
    })
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.model.state_dict().items()}
    save_file(unshared_tensors(state), str(folder / WEIGHTS))
    files = [CONFIG, WEIGHTS, *write_classifier(folder, weight, bias, module, "model.encode_image(pixels)")]
    diff = check_logits(exported_logits(folder, pixels), reference, f"open_clip.create_model('local-dir:{folder}') + classifier")
    return files, diff


def model_config(name_or_path: str) -> dict[str, Any]:
    """The architecture dict open_clip builds from: the source folder's, the hub's, or the built-in one."""
    import open_clip

    name = str(name_or_path).removeprefix("local-dir:")
    local = Path(name).expanduser() / CONFIG
    if local.is_file():
        return dict(json.loads(local.read_text())["model_cfg"])
    if name.startswith("hf-hub:"):
        from open_clip.factory import _get_hf_config  # open_clip's reader of a hub repo's open_clip_config.json

        return dict(_get_hf_config(name.removeprefix("hf-hub:"))["model_cfg"])
    config = open_clip.get_model_config(name)
    if config is None:
        raise CheckpointError(f"open_clip knows no architecture {name!r}; cannot write its open_clip_config.json")
    return dict(config)


@torch.no_grad()
def exported_logits(folder: str | Path, pixels: torch.Tensor) -> torch.Tensor:
    """Class logits as an open_clip user computes them from the folder (tests use the same code path)."""
    import open_clip

    from clipft.exporting.common import load_classifier

    model = open_clip.create_model(f"local-dir:{Path(folder)}").eval()
    weight, bias, _ = load_classifier(folder)
    return model.encode_image(pixels, normalize=True).float() @ weight.t() + bias


def library_pixels(folder: str | Path, paths: list[Path]) -> torch.Tensor:
    """Pixels from the folder's own eval transform (``create_model_and_transforms``), as an open_clip user gets them."""
    import open_clip
    from PIL import Image

    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{Path(folder)}")
    pixels = []
    for path in paths:
        with Image.open(path) as img:
            pixels.append(preprocess(img))
    return torch.stack(pixels)
