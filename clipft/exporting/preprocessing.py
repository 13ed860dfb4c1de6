"""The preprocessing an export carries: clipft's evaluation pixels, as the target library computes them.

clipft evaluates with ``clip_eval`` (:mod:`clipft.data.transforms`): decode to RGB (alpha composited on
white), resize the short side to ``image_size`` with torchvision's *antialiased bilinear* filter on the
uint8 image (rounded back to uint8), centre-crop with torchvision's offset ``round((H - S) / 2)`` (half
to even), scale to [0, 1], normalise. Library defaults differ, and that was the 0.2-pixel gap between
exports and ``clipft-predict``: transformers' ``CLIPImageProcessor`` and open_clip both default to
*bicubic*. The exports now write ``resample=bilinear`` (HF) and ``interpolation="bilinear"``,
``resize_mode="shortest"`` (open_clip); what is left cannot be configured:

* transformers' centre crop floors the offset (``int((H - S) / 2)``) where torchvision rounds half to
  even: a one-pixel shift when the resized side exceeds the crop by 3 mod 4;
* open_clip resizes PIL images with PIL's bilinear filter, which rounds to uint8 differently from
  torchvision's tensor kernel (at most one 8-bit level, ~0.015 after normalisation);
* ONNX and safetensors exports take normalised pixels: they hold no preprocessing at all.

So every export also ships ``preprocess.py`` (torch, torchvision and Pillow only; no clipft), which
reproduces clipft's pixels exactly, and the export check runs the target library's own preprocessing
and ``preprocess.py`` on real PNG files of odd sizes, against ``clipft-predict``'s pixels and
probabilities; ``clipft_export.json["preprocessing_check"]`` records both differences.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import CheckpointError

PREPROCESS_SCRIPT = "preprocess.py"
# fp32 normalisation of identical uint8 pixels differs by ~5e-7; one 8-bit level is ~0.015
PIXEL_TOLERANCE = 1e-5
HF_BILINEAR = 2  # PIL.Image.BILINEAR / transformers' PILImageResampling.BILINEAR

# what the target library cannot be configured to reproduce (None: nothing known)
LIMITATIONS: dict[str, str | None] = {
    "hf": (
        "transformers' centre crop floors the crop offset, int((H - S) / 2), where clipft (torchvision) rounds it "
        "half to even: a one-pixel shift whenever the resized side exceeds the crop by 3 mod 4 "
        "(transformers before 5 also resizes with PIL, which rounds to uint8 differently); use preprocess.py "
        "for clipft's exact pixels"
    ),
    "open_clip": (
        "open_clip resizes PIL images with PIL's bilinear filter, clipft uint8 tensors with torchvision's "
        "antialiased bilinear kernel; they round differently (at most one 8-bit level per pixel); use "
        "preprocess.py for clipft's exact pixels"
    ),
    "onnx": "model.onnx takes normalised pixels and holds no preprocessing: use preprocess.py",
    "safetensors": "the module takes normalised pixels and holds no preprocessing: use preprocess.py",
}

# probe files: (width, height) as multiples of the model's input size S, plus an offset; odd sizes,
# landscape and portrait, smaller and larger than S, and resized sides S + 3 (mod 4) (the crop tie)
PROBE_SHAPES = ((1.4, 0, 1.0, 5), (0.7, 1, 2.1, 3), (3.3, 1, 2.9, 0), (1.0, 3, 1.0, 3), (0.9, 0, 1.3, 1))


def hf_image_processor_kwargs(pre: dict[str, Any]) -> dict[str, Any]:
    """``CLIPImageProcessor`` arguments for clipft's ``clip_eval`` (bilinear, short side, centre crop, RGB)."""
    size = int(pre["image_size"])
    return {
        "do_resize": True, "size": {"shortest_edge": size}, "resample": HF_BILINEAR,
        "do_center_crop": True, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(pre["mean"]), "image_std": list(pre["std"]), "do_convert_rgb": True,
    }


def open_clip_preprocess_cfg(pre: dict[str, Any]) -> dict[str, Any]:
    """open_clip's ``preprocess_cfg`` for clipft's ``clip_eval``."""
    return {"size": int(pre["image_size"]), "mode": "RGB", "mean": list(pre["mean"]), "std": list(pre["std"]),
            "interpolation": "bilinear", "resize_mode": "shortest", "fill_color": 0}


_SCRIPT = '''"""Preprocess images exactly as clipft evaluated this model (written by clipft-export).

Needs only torch, torchvision and Pillow (no clipft). It is clipft's ``clip_eval`` transform: decode
to RGB (transparency composited on white), resize the short side to IMAGE_SIZE with torchvision's
antialiased bilinear filter on the uint8 image, centre-crop IMAGE_SIZE x IMAGE_SIZE, scale to
[0, 1], normalise with MEAN/STD.

    from preprocess import preprocess
    pixel_values = preprocess(["a.jpg", "b.png"])   # N x 3 x IMAGE_SIZE x IMAGE_SIZE, float32

    python preprocess.py a.jpg b.png                 # prints each file's pixel shape
"""

from __future__ import annotations

import sys

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGE_SIZE = {image_size}
MEAN = {mean}
STD = {std}


def load_image(path) -> Image.Image:
    """Decode fully and convert any mode to RGB as clipft does (16-bit grey scaled, alpha on white)."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


# clipft.data.images.to_rgb, written into this file when the export was made
{to_rgb_source}


def transform() -> v2.Compose:
    """PIL image (or uint8 C x H x W tensor) -> normalised float pixels."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(IMAGE_SIZE, antialias=True),  # bilinear (torchvision's default), on uint8
        v2.CenterCrop(IMAGE_SIZE),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def preprocess(paths) -> torch.Tensor:
    """The model's ``pixel_values`` for these image files, in order."""
    t = transform()
    return torch.stack([t(load_image(p)) for p in paths])


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(name, tuple(preprocess([name]).shape[1:]))
'''


def write_preprocess_script(folder: Path, pre: dict[str, Any]) -> str:
    """``preprocess.py``: clipft's evaluation pixels for this export, in plain torchvision."""
    import inspect

    from clipft.data.images import to_rgb

    # the RGB conversion is clipft's own function, copied in by source: one definition, and the script
    # still imports nothing from clipft
    text = _SCRIPT.format(image_size=int(pre["image_size"]), mean=json.dumps([float(v) for v in pre["mean"]]),
                          std=json.dumps([float(v) for v in pre["std"]]), to_rgb_source=inspect.getsource(to_rgb).rstrip())
    (folder / PREPROCESS_SCRIPT).write_text(text)
    return PREPROCESS_SCRIPT


def load_preprocess_script(folder: str | Path) -> Callable[[Sequence[str | Path]], torch.Tensor]:
    """The ``preprocess`` function of an export's ``preprocess.py`` (imported as a user would, by path)."""
    path = Path(folder) / PREPROCESS_SCRIPT
    name = f"_clipft_export_preprocess_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CheckpointError(f"cannot import {str(path)!r}")
    script = importlib.util.module_from_spec(spec)
    sys.modules[name] = script
    try:
        spec.loader.exec_module(script)
    finally:
        sys.modules.pop(name, None)
    return script.preprocess


def probe_image_files(folder: Path, image_size: int) -> list[Path]:
    """A few seeded RGB PNGs of odd sizes around ``image_size``: smooth gradients plus noise, like photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i, (fw, dw, fh, dh) in enumerate(PROBE_SHAPES):
        width, height = max(3, round(fw * image_size) + dw), max(3, round(fh * image_size) + dh)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1) * 255.0
        noisy = base * 0.6 + rng.uniform(0, 255, size=(height, width, 3)) * 0.4
        path = folder / f"probe_{i}_{width}x{height}.png"
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8), mode="RGB").save(path)
        paths.append(path)
    return paths


def _diffs(pixels: torch.Tensor, logits: torch.Tensor, ref_pixels: torch.Tensor, ref_probs: torch.Tensor,
           what: str) -> dict[str, Any]:
    pixels = pixels.float().cpu()
    if pixels.shape != ref_pixels.shape:
        raise CheckpointError(f"{what} gives pixels of shape {tuple(pixels.shape)}, clipft {tuple(ref_pixels.shape)}")
    probs = logits.float().cpu().softmax(dim=-1)
    pixel_diff = float((pixels - ref_pixels).abs().max())
    return {"max_abs_pixel_diff": pixel_diff, "max_abs_prob_diff": float((probs - ref_probs).abs().max()),
            "exact": pixel_diff <= PIXEL_TOLERANCE}


def check_preprocessing(
    module: nn.Module,
    folder: Path,
    fmt: str,
    exported_logits: Callable[[torch.Tensor], torch.Tensor],
    library: tuple[str, Callable[[Sequence[Path]], torch.Tensor]] | None,
) -> dict[str, Any]:
    """Compare the export's preprocessing with ``clipft-predict``'s on probe PNG files.

    ``exported_logits``: pixels -> logits through the reloaded export; ``library``: ``(description,
    paths -> pixels)`` with the target library's own preprocessing, None where the format has none.
    ``preprocess.py`` must match exactly (else a CheckpointError); the library's differences are recorded.
    """
    from clipft.evaluation.inference import batches, eval_transform, model_preprocessing

    size = int(model_preprocessing(module)["image_size"])
    with tempfile.TemporaryDirectory(prefix="clipft-export-probes-") as tmp:
        paths = probe_image_files(Path(tmp), size)
        ref_pixels = torch.cat([px for _, px in batches(paths, eval_transform(module))]).float()
        with torch.no_grad():
            ref_probs = module(ref_pixels).float().softmax(dim=-1)
        script_pixels = load_preprocess_script(folder)(paths).float()
        library_pixels = library[1](paths).float() if library is not None else None
        # one reload of the export for both: its logits on preprocess.py's pixels, then on the library's
        batch = script_pixels if library_pixels is None or library_pixels.shape != script_pixels.shape \
            else torch.cat([script_pixels, library_pixels])
        logits = exported_logits(batch)
    n = len(paths)
    script = _diffs(script_pixels, logits[:n], ref_pixels, ref_probs, PREPROCESS_SCRIPT)
    if not script["exact"]:
        raise CheckpointError(
            f"{PREPROCESS_SCRIPT} does not reproduce clipft's evaluation pixels (max difference "
            f"{script['max_abs_pixel_diff']:.3g}; is the checkpoint's eval transform not clip_eval?); the export was not kept"
        )
    record: dict[str, Any] = {
        "probe_files": [p.name for p in paths],
        "reference": "clipft-predict (load_rgb + the checkpoint's eval transform)",
        PREPROCESS_SCRIPT: script,
        "library": None,
    }
    if library is not None:
        # a shape mismatch raises in _diffs before the (unused) logits are read
        record["library"] = {"preprocessing": library[0],
                             **_diffs(library_pixels, logits[n:], ref_pixels, ref_probs, library[0])}
    record["limitation"] = LIMITATIONS.get(fmt)  # what the target cannot be configured to do, even where the probes agree
    return record
