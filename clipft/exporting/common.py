"""What every export format shares: the module's inference form, probe images, a verified
linear class head, and a folder that appears only once it is complete and checked."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import CheckpointError, ConfigError

CLASSIFIER_WEIGHTS = "classifier.safetensors"
CLASSIFIER_CONFIG = "clipft_classifier.json"
EXPORT_RECORD = "clipft_export.json"
# A kept export's logits differ from the checkpoint's by at most this, relative to the logits' scale
# (fp32 re-implementations of the same graph differ by ~1e-6 relative; more means a wrong export).
RELATIVE_TOLERANCE = 1e-4
PROBE_IMAGES = 4


@dataclass
class ExportResult:
    format: str
    folder: Path
    files: list[str]
    max_abs_logit_diff: float
    logit_scale: float
    # clipft_export.json["preprocessing_check"]: image files through the target's preprocessing vs clipft-predict
    preprocessing_check: dict[str, Any] | None = None

    def summary(self) -> str:
        rel = self.max_abs_logit_diff / max(self.logit_scale, 1e-12)
        text = (f"wrote {self.format} export to {self.folder} ({', '.join(self.files)}); reloaded with its own loader: "
                f"max |logit difference| {self.max_abs_logit_diff:.2e} ({rel:.1e} of the logits' scale)")
        check = self.preprocessing_check or {}
        library, script = check.get("library"), check.get("preprocess.py")
        if script:
            text += (f"\npreprocess.py reproduces clipft-predict's pixels (max |pixel difference| "
                     f"{script['max_abs_pixel_diff']:.1e}, |probability difference| {script['max_abs_prob_diff']:.1e})")
        if library:
            text += (f"\n{library['preprocessing']} on image files: max |pixel difference| {library['max_abs_pixel_diff']:.3g}, "
                     f"|probability difference| {library['max_abs_prob_diff']:.3g} against clipft-predict")
        if check.get("limitation"):
            text += f"\nnote: {check['limitation']}"
        return text


def inference_form(module: nn.Module) -> nn.Module:
    """The module that predicts what ``module`` predicts in the fewest parts (PEFT: adapters merged), ready to run."""
    from clipft.utils.locate import locate

    exported = module.inference_export() if hasattr(module, "inference_export") else None
    if exported is not None:
        module_path, hparams, state_dict = exported
        merged = locate(module_path)(**hparams)  # a clipft class named by clipft's own code, not by a file
        merged.load_state_dict(state_dict, strict=True)
        merged.checkpoint_meta = dict(getattr(module, "checkpoint_meta", {}) or {}, module=module_path)
        module = merged
    module = module.cpu().eval()
    if hasattr(module, "prepare_for_inference"):
        with torch.no_grad():
            module.prepare_for_inference()
    return module


def preprocessing_of(module: nn.Module) -> dict[str, Any]:
    from clipft.evaluation.inference import model_preprocessing

    return model_preprocessing(module)


def probe_pixels(module: nn.Module, count: int = PROBE_IMAGES) -> torch.Tensor:
    """Normalised-pixel probes at the module's input size (seeded, so every check sees the same images)."""
    size = int(preprocessing_of(module)["image_size"])
    generator = torch.Generator().manual_seed(0)
    return torch.randn(count, 3, size, size, generator=generator)


@torch.no_grad()
def module_logits(module: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return module(pixels).float()


def backbone_of(module: nn.Module, fmt: str) -> nn.Module:
    backbone = getattr(module, "backbone", None)
    if backbone is None or not hasattr(backbone, "encode_image"):
        raise CheckpointError(
            f"--format {fmt} exports a CLIP backbone and its class head, but {type(module).__name__} has no single CLIP "
            "backbone; use --format onnx or --format safetensors"
        )
    return backbone


@torch.no_grad()
def verified_linear_head(
    module: nn.Module, pixels: torch.Tensor, reference: torch.Tensor, fmt: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's class head as ``(weight, bias)`` over its normalised image embedding, checked against
    ``reference`` (the module's own logits on ``pixels``)."""
    head = module.linear_head() if hasattr(module, "linear_head") else None
    if head is None:
        raise CheckpointError(
            f"--format {fmt} ships the backbone plus a linear class head, but {type(module).__name__}'s classifier is not "
            "one linear map of the image embedding; use --format onnx (the whole classifier) or --format safetensors"
        )
    weight, bias = (t.detach().float().cpu().contiguous() for t in head)
    embedding = backbone_of(module, fmt).encode_image(pixels).float()
    check_logits(embedding @ weight.t() + bias, reference, f"{type(module).__name__}.linear_head()")
    return weight, bias


def check_logits(exported: torch.Tensor, reference: torch.Tensor, what: str) -> float:
    """The largest absolute difference; a CheckpointError when it exceeds :data:`RELATIVE_TOLERANCE` of the scale."""
    exported, reference = exported.float().cpu(), reference.float().cpu()
    if exported.shape != reference.shape:
        raise CheckpointError(f"{what} gives logits of shape {tuple(exported.shape)}, the checkpoint {tuple(reference.shape)}")
    diff = float((exported - reference).abs().max())
    scale = float(reference.abs().max().clamp(min=1.0))
    if not diff <= RELATIVE_TOLERANCE * scale:
        raise CheckpointError(
            f"{what} does not reproduce the checkpoint's logits (max difference {diff:.3g} at logit scale {scale:.3g}); "
            "the export was not kept"
        )
    return diff


def write_classifier(folder: Path, weight: torch.Tensor, bias: torch.Tensor, module: nn.Module, embedding: str) -> list[str]:
    """``classifier.safetensors`` (weight C x D, bias C) and ``clipft_classifier.json`` (class names, how to apply it)."""
    from safetensors.torch import save_file

    from clipft.utils.io import atomic_write_json

    save_file({"weight": weight.contiguous(), "bias": bias.contiguous()}, str(folder / CLASSIFIER_WEIGHTS),
              metadata={"format": "clipft-linear-classifier"})
    atomic_write_json(folder / CLASSIFIER_CONFIG, {
        "format": "clipft-linear-classifier",
        "logits": f"normalize({embedding}, dim=-1) @ weight.T + bias",
        "class_names": list(module.class_names),
        "preprocessing": preprocessing_of(module),
    })
    return [CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG]


def load_classifier(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The class head written by :func:`write_classifier`: ``(weight, bias, class_names)``."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    tensors = load_file(str(folder / CLASSIFIER_WEIGHTS))
    names = json.loads((folder / CLASSIFIER_CONFIG).read_text())["class_names"]
    return tensors["weight"], tensors["bias"], list(names)


@contextmanager
def staged_folder(out: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a private folder beside ``out``; it becomes ``out`` only if the block completes (an export is never half-written)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUT={str(out)!r} is a file; give a folder to write the export into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"OUT={str(out)!r} already holds files; choose another folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def unshared_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): give each its own copy."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        out[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return out
