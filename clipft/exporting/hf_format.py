"""``--format hf``: an HF CLIP folder (``CLIPModel.from_pretrained(OUT)``, its tokenizer and image
processor) plus the class head over ``get_image_features`` (``classifier.safetensors``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from clipft.errors import CheckpointError


def write(module: nn.Module, folder: Path, pixels: torch.Tensor, reference: torch.Tensor) -> tuple[list[str], float]:
    from transformers import CLIPImageProcessor, CLIPModel

    from clipft.exporting.common import backbone_of, check_logits, preprocessing_of, verified_linear_head, write_classifier
    from clipft.exporting.preprocessing import hf_image_processor_kwargs

    backbone = backbone_of(module, "hf")
    model = getattr(backbone, "model", None)
    if not isinstance(model, CLIPModel):
        raise CheckpointError(
            f"--format hf writes a transformers CLIPModel, but this checkpoint's backbone is {type(backbone).__name__}; "
            "use --format open_clip (open_clip backbones), --format safetensors or --format onnx"
        )
    weight, bias = verified_linear_head(module, pixels, reference, "hf")
    model.save_pretrained(folder, safe_serialization=True)
    backbone.tokenizer.save_pretrained(folder)
    # clipft's clip_eval: bilinear (not CLIP's bicubic default), short side, centre crop (see clipft.exporting.preprocessing)
    CLIPImageProcessor(**hf_image_processor_kwargs(preprocessing_of(module))).save_pretrained(folder)
    files = write_classifier(folder, weight, bias, module, "CLIPModel.get_image_features(pixel_values)")
    diff = check_logits(exported_logits(folder, pixels), reference, f"CLIPModel.from_pretrained({str(folder)!r}) + classifier")
    return sorted(p.name for p in folder.iterdir() if p.name not in files) + files, diff


@torch.no_grad()
def exported_logits(folder: str | Path, pixels: torch.Tensor) -> torch.Tensor:
    """Class logits as a transformers user computes them from the folder (tests use the same code path)."""
    from transformers import CLIPModel
    from transformers.utils import logging as hf_logging

    from clipft.exporting.common import load_classifier

    hf_logging.disable_progress_bar()  # one reload, not a progress bar per weight file
    model = CLIPModel.from_pretrained(str(folder)).eval()
    weight, bias, _ = load_classifier(folder)
    return nn.functional.normalize(image_features(model, pixels), dim=-1) @ weight.t() + bias


def library_pixels(folder: str | Path, paths: list[Path]) -> torch.Tensor:
    """``pixel_values`` from the folder's own image processor (``AutoImageProcessor``), as a transformers user gets them."""
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(str(folder))
    images = []
    for path in paths:
        with Image.open(path) as img:
            img.load()
            images.append(img.copy())
    return processor(images=images, return_tensors="pt")["pixel_values"]


def image_features(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``get_image_features``: a tensor before transformers 5, an output with the projection as ``pooler_output`` since."""
    out = model.get_image_features(pixel_values=pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output
