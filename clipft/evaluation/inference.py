"""Run a loaded checkpoint on image files: the preprocessing it was trained with, batched, no Trainer.

Shared by ``eval.py calibrate=true`` (validation predictions), Grad-CAM and the
``clipft-predict`` / ``clipft-ask`` CLIs, so every path feeds a model the same tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.data.images import is_image_file, load_rgb
from clipft.data.transforms import build_transform
from clipft.errors import CheckpointError, DataError
from clipft.models.contract import VisionLanguageBackbone
from clipft.utils.constants import CLIP_PREPROCESSING

# what a module that records nothing gets (CLIP's normalisation at 224 px)
DEFAULT_PREPROCESSING = CLIP_PREPROCESSING.as_dict()


def model_preprocessing(model: nn.Module) -> dict[str, Any]:
    """Image size/mean/std the run evaluated with: recorded in the checkpoint, else the backbone's."""
    recorded = (getattr(model, "checkpoint_meta", None) or {}).get("preprocessing")
    merged = {**DEFAULT_PREPROCESSING, **dict(recorded or getattr(model, "preprocessing", None) or {})}
    return {k: merged[k] for k in DEFAULT_PREPROCESSING}  # a plain dict: **-able, JSON-able


def eval_transform(model: nn.Module) -> Callable[[Any], torch.Tensor]:
    name = (getattr(model, "checkpoint_meta", None) or {}).get("eval_transform", "clip_eval")
    return build_transform(name, **model_preprocessing(model))


def expand_image_paths(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted); errors name the bad input."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
            if not found:
                raise DataError(f"folder {str(p)!r} holds no image files (png, jpg, ppm, ...)")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{str(p)!r} is neither an image file nor a folder")
    if not paths:
        raise DataError("no images given: pass image files or folders")
    return paths


def batches(
    paths: Sequence[str | os.PathLike],
    transform: Callable[[Any], torch.Tensor],
    batch_size: int = 64,
    skipped: list[dict[str, str]] | None = None,
):
    """Yield ``(paths, pixel tensor)`` chunks, decoding with :func:`clipft.data.images.load_rgb`.

    ``skipped``: a list to collect undecodable images in (``{"path", "error"}``) instead of
    raising; the yielded chunks then hold only the images that decoded.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    for start in range(0, len(paths), batch_size):
        chunk, pixels = [], []
        for p in paths[start : start + batch_size]:
            try:
                image = load_rgb(p)
            except DataError as exc:
                if skipped is None:
                    raise
                skipped.append({"path": str(p), "error": str(exc)})
                continue
            chunk.append(p)
            pixels.append(transform(image))
        if chunk:
            yield chunk, torch.stack(pixels)


def model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 64,
    skipped: list[dict[str, str]] | None = None,
) -> torch.Tensor:
    """Softmax class probabilities for every path, in order (N x C, on CPU); ``skipped``: see :func:`batches`."""
    model.eval()
    model.prepare_for_inference()  # ClassificationModule: e.g. CLIP methods cache their class text
    device, transform, out = model_device(model), eval_transform(model), []
    for _, pixels in batches(paths, transform, batch_size, skipped):
        out.append(model(pixels.to(device)).float().softmax(dim=-1).cpu())
    return _concat(out, paths)


def clip_backbone(model: nn.Module, what: str = "text/image matching") -> nn.Module:
    """The CLIP-style backbone (``encode_image``/``encode_text``/``tokenize``) of a module; an ensemble's first member."""
    backbone = getattr(model, "backbone", None)
    if backbone is None and len(getattr(model, "backbones", None) or []):
        backbone = model.backbones[0]
    if not isinstance(backbone, VisionLanguageBackbone):
        raise CheckpointError(
            f"{what} needs a CLIP-style checkpoint with a text tower, but this one holds "
            f"{type(model).__name__}; use clipft-predict to classify with its fixed classes"
        )
    return backbone


def require_text_tower(model: nn.Module, what: str) -> None:
    clip_backbone(model, what)


@torch.no_grad()
def image_features(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 64,
    skipped: list[dict[str, str]] | None = None,
) -> torch.Tensor:
    """L2-normalised image embeddings of a CLIP-style module (N x D, on CPU); ``skipped``: see :func:`batches`."""
    backbone = clip_backbone(model)
    model.eval()
    device, transform, out = model_device(model), eval_transform(model), []
    for _, pixels in batches(paths, transform, batch_size, skipped):
        out.append(nn.functional.normalize(backbone.encode_image(pixels.to(device)).float(), dim=-1).cpu())
    return _concat(out, paths)


def _concat(chunks: list[torch.Tensor], paths: Sequence[Any]) -> torch.Tensor:
    """The per-batch outputs as one tensor; none at all (every image skipped) is a one-line error."""
    if not chunks:
        raise DataError(f"none of the {len(paths)} image(s) could be decoded")
    return torch.cat(chunks)


def text_features(model: nn.Module, prompts_per_item: Sequence[Sequence[str]]) -> torch.Tensor:
    """One embedding per item, built like a class's zero-shot weight (mean of normalised prompt embeddings)."""
    from clipft.methods.zeroshot_head import zeroshot_weights

    model.eval()
    return zeroshot_weights(clip_backbone(model), prompts_per_item, model_device(model)).cpu()


def clip_logit_scale(model: nn.Module, max_scale: float = 100.0) -> float:
    """The checkpoint's learned inverse temperature ``exp(logit_scale)`` (capped as in CLIP)."""
    return float(clip_backbone(model).logit_scale.detach().exp().clamp(max=max_scale))


def prompt_templates(model: nn.Module) -> list[str]:
    """The templates the checkpoint was trained with (``model.prompts.templates``); ``["{}"]`` if it used none."""
    hparams = getattr(model, "hparams", {}) or {}
    templates = (hparams.get("prompts") or {}).get("templates")
    if templates is None:
        from clipft.prompts import DEFAULT_TEMPLATES

        return list(DEFAULT_TEMPLATES)
    return list(templates) if isinstance(templates, (list, tuple)) and templates else ["{}"]


@torch.no_grad()
def loader_predictions(model: nn.Module, loader: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs, targets)`` over an ``(images, labels)`` dataloader, e.g. the validation split."""
    model.eval()
    model.prepare_for_inference()  # ClassificationModule: e.g. CLIP methods cache their class text
    device, probs, targets = model_device(model), [], []
    for batch in loader:
        probs.append(model(batch[0].to(device)).float().softmax(dim=-1).cpu())
        targets.append(torch.as_tensor(batch[1]).cpu())
    return torch.cat(probs), torch.cat(targets)
