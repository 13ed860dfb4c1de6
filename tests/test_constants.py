"""One constants module for normalisation, and the typed preprocessing record data, models and inference share."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from clipft.utils.constants import (
    CLIP_PREPROCESSING,
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_PREPROCESSING,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
    Preprocessing,
)

PACKAGE = Path(__file__).resolve().parents[1] / "clipft"


def test_the_values_are_open_clips_and_torchvisions():
    assert OPENAI_DATASET_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert OPENAI_DATASET_STD == (0.26862954, 0.26130258, 0.27577711)
    assert IMAGENET_DEFAULT_MEAN == (0.485, 0.456, 0.406) and IMAGENET_DEFAULT_STD == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("part", ["models", "evaluation", "methods", "data"])
def test_no_copy_of_the_constants_elsewhere(part):
    root = PACKAGE / part
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    copies = [str(f) for f in files for literal in ("0.48145466", "0.26862954", "0.485, 0.456", "0.229, 0.224")
              if literal in f.read_text()]
    assert not copies


def test_the_record_is_frozen_and_reads_as_a_plain_dict():
    pre = Preprocessing(32, [0.5, 0.5, 0.5], (0.25, 0.25, 0.25))
    with pytest.raises(dataclasses.FrozenInstanceError):
        pre.image_size = 64  # type: ignore[misc]
    plain = {"image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    assert dict(pre) == {**pre} == pre.as_dict() == plain and pre == plain
    assert json.loads(json.dumps(dict(pre))) == plain  # checkpoint / folder metadata stay plain dicts
    assert pre.replace(image_size=64)["image_size"] == 64 and pre.get("interpolation") is None
    assert Preprocessing.resolve(None, None, None) == CLIP_PREPROCESSING.as_dict()
    assert Preprocessing.from_mapping({"image_size": 96}, IMAGENET_PREPROCESSING) == {**IMAGENET_PREPROCESSING.as_dict(), "image_size": 96}


def test_backbones_and_inference_use_the_record(tiny_clip_dir):
    import torch

    from clipft.evaluation.inference import model_preprocessing
    from clipft.models import HFCLIPBackbone
    from clipft.models.torchvision_backbones import build_torchvision_backbone

    clip = HFCLIPBackbone(name_or_path=str(tiny_clip_dir))
    assert isinstance(clip.preprocessing, Preprocessing) and clip.preprocessing["mean"] == list(OPENAI_DATASET_MEAN)
    cnn = build_torchvision_backbone("mobilenet_v3_small", pretrained=False)
    assert cnn.preprocessing == {"image_size": 224, "mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD)}
    bare = torch.nn.Linear(1, 1)
    assert model_preprocessing(bare) == CLIP_PREPROCESSING.as_dict() and type(model_preprocessing(bare)) is dict
