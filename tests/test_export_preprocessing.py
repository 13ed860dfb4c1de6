"""Exports carry clipft's evaluation preprocessing: image files through the target library's own
preprocessing (HF preprocessor_config.json, open_clip's preprocess_cfg) or the shipped preprocess.py give
clipft-predict's pixels, and clipft_export.json records the measured pixel/probability differences.

Root cause of the old gap: clipft's clip_eval resizes with torchvision's antialiased *bilinear* filter,
while CLIPImageProcessor and open_clip default to *bicubic*."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipft.data.images import load_rgb
from clipft.evaluation.inference import eval_transform, predict_probs
from clipft.exporting import export_module
from clipft.methods import ContrastiveFineTune, LinearHeadFineTune

CLASSES = ["stop", "yield", "keep left"]
OPT = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
ONE_LEVEL = 1 / 255 / 0.26130258 + 1e-4  # one 8-bit level after CLIP's normalisation (the smallest std)


def photo(path: Path, width: int, height: int, mode: str = "RGB", seed: int = 0) -> Path:
    """A gradient with noise (something between a photo and a test card), saved as PNG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 200 + rng.uniform(0, 55, (height, width, 3))
    image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    if mode == "RGBA":
        alpha = Image.fromarray((np.arange(width)[None, :].repeat(height, 0) * 255 // width).astype(np.uint8))
        image.putalpha(alpha)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


# odd sizes, up- and downscaled, whose resized long side exceeds the 32 px crop by an even number:
# there transformers' centre crop (offset floored) and torchvision's (rounded half to even) agree
NO_CROP_TIE = [(45, 37), (23, 70), (107, 93), (35, 35), (61, 40)]
CROP_TIE = [(29, 43)]  # 29 -> 32, 43 -> 47: 15 px to crop, offset 7 (transformers) vs 8 (torchvision)


def files(folder: Path, sizes) -> list[Path]:
    folder.mkdir(exist_ok=True)
    return [photo(folder / f"{w}x{h}.png", w, h, seed=i) for i, (w, h) in enumerate(sizes)]


def clipft_pixels(module, paths) -> torch.Tensor:
    transform = eval_transform(module)
    return torch.stack([transform(load_rgb(p)) for p in paths])


def hf_module(tiny_clip_dir) -> LinearHeadFineTune:
    module = LinearHeadFineTune(CLASSES, clip={"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)},
                                optimizer=OPT)
    module.prepare_for_inference()
    with torch.no_grad():
        module.head.weight.add_(torch.randn(module.head.weight.shape, generator=torch.Generator().manual_seed(0)) * 3)
    return module.eval()


def test_hf_export_preprocesses_image_files_as_clipft_predict(tiny_clip_dir, tmp_path):
    from transformers import AutoImageProcessor, CLIPImageProcessor

    from clipft.exporting.hf_format import exported_logits

    module = hf_module(tiny_clip_dir)
    export_module(module, "hf", tmp_path / "hf")
    paths = files(tmp_path / "images", NO_CROP_TIE)
    images = [Image.open(p) for p in paths]
    expected = clipft_pixels(module, paths)

    processor = AutoImageProcessor.from_pretrained(tmp_path / "hf")
    assert processor.resample == 2 and processor.do_center_crop and processor.do_convert_rgb  # 2: bilinear
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)
    probs = exported_logits(tmp_path / "hf", pixels).softmax(-1)
    torch.testing.assert_close(probs, predict_probs(module, paths), atol=1e-5, rtol=0)

    # the root cause, pinned: CLIP's default bicubic processor (what exports wrote before) is far off
    bicubic = CLIPImageProcessor(**{**processor.to_dict(), "resample": 3})
    assert float((bicubic(images=images, return_tensors="pt")["pixel_values"] - expected).abs().max()) > 0.05

    record = json.loads((tmp_path / "hf" / "clipft_export.json").read_text())["preprocessing_check"]
    library = record["library"]
    assert "AutoImageProcessor" in library["preprocessing"]
    assert library["max_abs_pixel_diff"] >= 0 and library["max_abs_prob_diff"] >= 0
    assert record["preprocess.py"]["exact"] and record["preprocess.py"]["max_abs_pixel_diff"] <= 1e-5
    assert "crop" in record["limitation"] and len(record["probe_files"]) >= 3


def test_hf_export_says_where_transformers_cannot_match_and_preprocess_py_does(tiny_clip_dir, tmp_path):
    from transformers import AutoImageProcessor

    from clipft.exporting.preprocessing import load_preprocess_script

    module = hf_module(tiny_clip_dir)
    result = export_module(module, "hf", tmp_path / "hf")
    paths = files(tmp_path / "images", CROP_TIE)
    paths.append(photo(tmp_path / "images" / "alpha.png", 50, 41, mode="RGBA"))
    paths.append(photo(tmp_path / "images" / "grey.png", 39, 66, mode="L"))
    expected = clipft_pixels(module, paths)
    hf = AutoImageProcessor.from_pretrained(tmp_path / "hf")(images=[Image.open(paths[0])], return_tensors="pt")["pixel_values"]
    assert float((hf - expected[:1]).abs().max()) > 0.01  # the crop tie: a one-pixel shift transformers cannot avoid
    record = json.loads((tmp_path / "hf" / "clipft_export.json").read_text())["preprocessing_check"]
    assert not record["library"]["exact"] and record["library"]["max_abs_pixel_diff"] > 0.01  # the probes hit it too
    assert "preprocess.py" in result.summary() and "note:" in result.summary()

    script = tmp_path / "hf" / "preprocess.py"
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(ast.parse(script.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert not any(str(m).startswith("clipft") for m in imported) and "torchvision.transforms" in imported
    torch.testing.assert_close(load_preprocess_script(tmp_path / "hf")(paths), expected, atol=1e-6, rtol=0)


def test_open_clip_export_preprocess_is_clipfts_bilinear_short_side_crop(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from clipft.exporting.open_clip_format import exported_logits
    from clipft.models.open_clip_backbone import save_tiny_open_clip

    source = save_tiny_open_clip(tmp_path / "source")
    module = ContrastiveFineTune(CLASSES, clip={"_target_": "clipft.models.OpenCLIPBackbone", "model_name": str(source)},
                                 optimizer=OPT).eval()
    export_module(module, "open_clip", tmp_path / "oc")
    cfg = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())["preprocess_cfg"]
    assert cfg["interpolation"] == "bilinear" and cfg["resize_mode"] == "shortest"
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'oc'}")
    paths = files(tmp_path / "images", NO_CROP_TIE + CROP_TIE)
    pixels = torch.stack([preprocess(Image.open(p)) for p in paths])
    # PIL's bilinear vs torchvision's uint8 kernel: at most one 8-bit level (bicubic was ~0.2)
    assert float((pixels - clipft_pixels(module, paths)).abs().max()) <= ONE_LEVEL
    probs = exported_logits(tmp_path / "oc", pixels).softmax(-1)
    assert float((probs - predict_probs(module, paths)).abs().max()) < 1e-2

    record = json.loads((tmp_path / "oc" / "clipft_export.json").read_text())["preprocessing_check"]
    assert 0 <= record["library"]["max_abs_pixel_diff"] <= ONE_LEVEL and record["library"]["max_abs_prob_diff"] < 1e-2
    assert record["preprocess.py"]["exact"] and (tmp_path / "oc" / "preprocess.py").is_file()


def test_a_format_without_preprocessing_ships_preprocess_py_and_says_so(tiny_clip_dir, tmp_path):
    from clipft.exporting import load_safetensors_export
    from clipft.exporting.preprocessing import load_preprocess_script

    module = hf_module(tiny_clip_dir)
    result = export_module(module, "safetensors", tmp_path / "st")
    assert "preprocess.py" in result.files
    record = json.loads((tmp_path / "st" / "clipft_export.json").read_text())["preprocessing_check"]
    assert record["library"] is None and "preprocess.py" in record["limitation"]
    assert record["preprocess.py"]["max_abs_pixel_diff"] <= 1e-5 and record["preprocess.py"]["max_abs_prob_diff"] <= 1e-5
    paths = files(tmp_path / "images", NO_CROP_TIE[:2])
    with torch.no_grad():
        probs = load_safetensors_export(tmp_path / "st")(load_preprocess_script(tmp_path / "st")(paths)).softmax(-1)
    torch.testing.assert_close(probs, predict_probs(module, paths), atol=1e-6, rtol=0)
