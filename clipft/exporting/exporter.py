"""``export_module``: the one path every format takes (inference form, probes, staged folder, record)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.exporting import hf_format, onnx_format, open_clip_format, safetensors_format
from clipft.exporting.common import (
    EXPORT_RECORD,
    RELATIVE_TOLERANCE,
    ExportResult,
    inference_form,
    module_logits,
    preprocessing_of,
    probe_pixels,
    staged_folder,
)
from clipft.exporting.preprocessing import check_preprocessing, write_preprocess_script

Writer = Callable[[nn.Module, Path, torch.Tensor, torch.Tensor], tuple[list[str], float]]
WRITERS: dict[str, Writer] = {
    "hf": hf_format.write,
    "open_clip": open_clip_format.write,
    "safetensors": safetensors_format.write,
    "onnx": onnx_format.write,
}


def _safetensors_logits(folder: Path, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return safetensors_format.load_safetensors_export(folder)(pixels).float()


# the reloaded export (pixels -> logits) and the target library's own preprocessing (None: the format has none)
EXPORTED_LOGITS: dict[str, Callable[[Path, torch.Tensor], torch.Tensor]] = {
    "hf": hf_format.exported_logits,
    "open_clip": open_clip_format.exported_logits,
    "safetensors": _safetensors_logits,
    "onnx": onnx_format.exported_logits,
}
LIBRARY_PREPROCESSING: dict[str, tuple[str, Callable[[Path, list[Path]], torch.Tensor]]] = {
    "hf": ("transformers AutoImageProcessor.from_pretrained(OUT)", hf_format.library_pixels),
    "open_clip": ("open_clip.create_model_and_transforms('local-dir:OUT')[2]", open_clip_format.library_pixels),
}


def export_module(module: nn.Module, fmt: str, out: str | Path, overwrite: bool = False, source: str | None = None) -> ExportResult:
    """Export a loaded clipft module (moved to CPU and eval mode: the check runs in fp32 there); see :mod:`clipft.exporting`."""
    from clipft.methods.classification import module_class_path
    from clipft.utils.io import atomic_write_json

    if fmt not in WRITERS:
        raise ConfigError(f"--format {fmt!r} is not an export format; choose one of {', '.join(WRITERS)}")
    module = inference_form(module)
    pixels = probe_pixels(module)
    reference = module_logits(module, pixels)
    with staged_folder(out, overwrite) as stage:
        files, diff = WRITERS[fmt](module, stage, pixels, reference)
        files = [*files, write_preprocess_script(stage, preprocessing_of(module))]
        library = LIBRARY_PREPROCESSING.get(fmt)
        checked = check_preprocessing(
            module, stage, fmt, lambda px: EXPORTED_LOGITS[fmt](stage, px),
            None if library is None else (library[0], lambda paths: library[1](stage, paths)),
        )
        atomic_write_json(stage / EXPORT_RECORD, {
            "format": fmt,
            "source": source,
            "module": module_class_path(module),
            "class_names": list(getattr(module, "class_names", [])),
            "preprocessing": preprocessing_of(module),
            "verified": {"probe_images": int(pixels.shape[0]), "max_abs_logit_diff": diff,
                         "relative_tolerance": RELATIVE_TOLERANCE},
            # the deployer's path: image files -> the target's preprocessing -> the export, against clipft-predict
            "preprocessing_check": checked,
        })
    scale = float(reference.abs().max().clamp(min=1.0))
    return ExportResult(fmt, Path(out).expanduser(), [*files, EXPORT_RECORD], diff, scale, checked)
