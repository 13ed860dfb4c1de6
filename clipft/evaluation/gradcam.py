"""Grad-CAM overlays for CNN and CLIP image towers, with the ``grad-cam`` package.

Which layer to explain is resolved per module, first match wins:

1. ``module.gradcam_target_layers() -> list[nn.Module]`` (and optionally
   ``module.gradcam_reshape_transform(activations) -> (B, C, H, W)``): any module may say it
   explicitly. CNN modules should implement this (e.g. ``[self.net.layer4[-1]]``).
2. An image tower, ``module.image_tower`` or ``module.backbone.image_tower``:
   a ViT (HF CLIP ``encoder.layers`` / open_clip ``transformer.resblocks``) uses the last
   block's first LayerNorm and :func:`vit_reshape_transform` to fold patch tokens into a grid;
   anything else is searched like a CNN.
3. A CNN: the block that holds the last ``nn.Conv2d`` (e.g. ``layer4[-1]`` of a ResNet,
   ``features[-1]`` of a MobileNetV2).

The explained class is the predicted one unless targets are given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clipft.data.images import load_rgb
from clipft.data.transforms import build_transform
from clipft.errors import ClipftError, ConfigError
from clipft.evaluation.inference import eval_transform, model_device, model_preprocessing

ReshapeFn = Callable[[torch.Tensor], torch.Tensor]


def _require_grad_cam():
    try:
        import pytorch_grad_cam
    except ImportError as exc:  # pragma: no cover - the package is installed in dev/test environments
        raise ClipftError("Grad-CAM needs the grad-cam package: pip install 'clipft[explain]'") from exc
    return pytorch_grad_cam


def vit_reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + h*w, D)`` ViT tokens -> ``(B, D, h, w)``: drop the CLS (and any register) tokens."""
    if tokens.ndim != 3:
        raise ConfigError(f"ViT Grad-CAM expects (batch, tokens, dim) activations, got shape {tuple(tokens.shape)}")
    side = int(math.isqrt(tokens.shape[1] - 1))
    patches = tokens[:, tokens.shape[1] - side * side :, :]
    return patches.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


def _image_tower(module: nn.Module) -> nn.Module | None:
    for owner in (module, getattr(module, "backbone", None)):
        tower = getattr(owner, "image_tower", None) if owner is not None else None
        if isinstance(tower, nn.Module):
            return tower
    return None


def _vit_last_norm(tower: nn.Module) -> nn.Module | None:
    layers = getattr(getattr(tower, "encoder", None), "layers", None)  # HF CLIPVisionTransformer
    if layers is not None and len(layers) and hasattr(layers[-1], "layer_norm1"):
        return layers[-1].layer_norm1
    blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)  # open_clip VisionTransformer
    if blocks is not None and len(blocks) and hasattr(blocks[-1], "ln_1"):
        return blocks[-1].ln_1
    return None


def _last_conv_block(root: nn.Module) -> nn.Module | None:
    last = None
    for name, mod in root.named_modules():
        if isinstance(mod, nn.Conv2d):
            last = name
    if last is None:
        return None
    parent = last.rpartition(".")[0]
    return root.get_submodule(parent) if parent else root.get_submodule(last)


def gradcam_target(module: nn.Module) -> tuple[list[nn.Module], ReshapeFn | None]:
    """Target layers and reshape transform for ``module`` (see the module docstring for the rules)."""
    if callable(getattr(module, "gradcam_target_layers", None)):
        layers = list(module.gradcam_target_layers())
        return layers, getattr(module, "gradcam_reshape_transform", None)
    tower = _image_tower(module)
    if tower is not None:
        norm = _vit_last_norm(tower)
        if norm is not None:
            return [norm], vit_reshape_transform
    block = _last_conv_block(tower if tower is not None else module)
    if block is None:
        raise ConfigError(
            f"cannot choose a Grad-CAM layer for {type(module).__name__}: it has no ViT image tower and no "
            "Conv2d; give the module a gradcam_target_layers() method returning the layers to explain"
        )
    return [block], None


def compute_cams(module: nn.Module, pixels: torch.Tensor, target_classes: Sequence[int] | None = None) -> np.ndarray:
    """``(B, H, W)`` heat maps in [0, 1] for the given (default: predicted) classes."""
    gc = _require_grad_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module.eval()
    module.prepare_for_inference()  # ClassificationModule: e.g. CLIP methods cache their class text
    layers, reshape = gradcam_target(module)
    pixels = pixels.to(model_device(module))
    targets = [ClassifierOutputTarget(int(c)) for c in target_classes] if target_classes is not None else None
    with torch.enable_grad(), gc.GradCAM(model=module, target_layers=layers, reshape_transform=reshape) as cam:
        return cam(input_tensor=pixels, targets=targets)


def display_images(module: nn.Module, paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """The images as the model sees them (same resize/crop), un-normalised, ``(B, H, W, 3)`` in [0, 1]."""
    pre = model_preprocessing(module)
    name = (getattr(module, "checkpoint_meta", None) or {}).get("eval_transform", "clip_eval")
    plain = build_transform(name, image_size=pre["image_size"], mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    return np.stack([plain(load_rgb(p)).permute(1, 2, 0).clamp(0, 1).numpy() for p in paths]).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Heat map blended over an ``(H, W, 3)`` float image -> uint8 RGB."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image, cam, use_rgb=True)


MIN_OVERLAY_SIDE = 224


def enlarge(image: np.ndarray, min_side: int = MIN_OVERLAY_SIDE) -> np.ndarray:
    """``image`` scaled by a whole factor (nearest neighbour: the model's own pixels, not smoothed ones) until
    its short side reaches ``min_side``: a 32 px overlay is unreadable in a ~500 px panel."""
    factor = max(1, -(-min_side // max(1, min(image.shape[:2]))))
    return image if factor == 1 else np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def explain_paths(
    module: nn.Module, paths: Sequence[str | os.PathLike], target_classes: Sequence[int] | None = None,
    min_side: int = MIN_OVERLAY_SIDE,
) -> list[np.ndarray]:
    """One uint8 overlay per image path, at least ``min_side`` pixels on its short side."""
    transform = eval_transform(module)
    pixels = torch.stack([transform(load_rgb(p)) for p in paths])
    cams = compute_cams(module, pixels, target_classes)
    return [enlarge(overlay(img, cam), min_side) for img, cam in zip(display_images(module, paths), cams)]


def select_examples(probs: torch.Tensor, targets: torch.Tensor, n: int) -> list[int]:
    """Indices of the most confident errors (up to half of ``n``) then the most confident correct ones.

    Samples with identical probabilities (pixel copies, common in scraped sign sets) are shown once.
    """
    conf, pred = probs.max(dim=-1)
    first = _first_occurrences(probs)
    wrong = ((pred != targets) & first).nonzero().flatten()
    right = ((pred == targets) & first).nonzero().flatten()
    wrong = wrong[conf[wrong].argsort(descending=True, stable=True)].tolist()
    right = right[conf[right].argsort(descending=True, stable=True)].tolist()
    n_wrong = min(len(wrong), max(n - len(right), n // 2))
    return wrong[:n_wrong] + right[: n - n_wrong]


def _first_occurrences(probs: torch.Tensor) -> torch.Tensor:
    """Mask of the rows whose probability vector has not appeared in an earlier row."""
    _, inverse = torch.unique(probs, dim=0, return_inverse=True)
    seen: set[int] = set()
    mask = torch.zeros(len(probs), dtype=torch.bool)
    for i, key in enumerate(inverse.tolist()):
        if key not in seen:
            seen.add(key)
            mask[i] = True
    return mask


def save_gradcam_grid(
    module: nn.Module,
    paths: Sequence[str | os.PathLike],
    probs: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    out_path: str | Path,
    n: int = 16,
) -> Path | None:
    """Grid of overlays for the most confident errors and correct predictions; None if there is nothing to show."""
    from clipft.evaluation.plots import plt, save_figure, short_label

    chosen = select_examples(probs, targets, n)
    if not chosen:
        return None
    preds = probs.argmax(dim=-1)
    images = explain_paths(module, [paths[i] for i in chosen], [int(preds[i]) for i in chosen])
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, img in zip(axes.flat, chosen, images):
        ok = int(preds[i]) == int(targets[i])
        ax.imshow(img)
        ax.set_title(
            f"{'✓' if ok else '✗'} true: {short_label(class_names[int(targets[i])], 18)}\n"
            f"pred: {short_label(class_names[int(preds[i])], 18)} ({float(probs[i, preds[i]]):.2f})",
            fontsize=8, color="darkgreen" if ok else "darkred",
        )
    fig.suptitle("Grad-CAM of the predicted class: most confident errors, then most confident correct")
    return save_figure(fig, out_path)
