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

Writer = Callable[[nn.Module, Path, torch.Tensor, torch.Tensor], tuple[list[str], float]]
WRITERS: dict[str, Writer] = {
    "hf": hf_format.write,
    "open_clip": open_clip_format.write,
    "safetensors": safetensors_format.write,
    "onnx": onnx_format.write,
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
        atomic_write_json(stage / EXPORT_RECORD, {
            "format": fmt,
            "source": source,
            "module": module_class_path(module),
            "class_names": list(getattr(module, "class_names", [])),
            "preprocessing": preprocessing_of(module),
            "verified": {"probe_images": int(pixels.shape[0]), "max_abs_logit_diff": diff,
                         "relative_tolerance": RELATIVE_TOLERANCE},
        })
    scale = float(reference.abs().max().clamp(min=1.0))
    return ExportResult(fmt, Path(out).expanduser(), [*files, EXPORT_RECORD], diff, scale)
