"""Transform presets are sign-safe and accept PIL or uint8 tensors; dataset mean/std is computed right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_trees import write_png
from PIL import Image
from torchvision.transforms import v2

from clipft.data import FolderDataModule, compute_mean_std
from clipft.data.transforms import PRESETS, build_transform
from clipft.errors import ConfigError

MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def left_red_right_blue(size: int = 40) -> Image.Image:
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[:, : size // 2, 0] = 255
    arr[:, size // 2 :, 2] = 255
    return Image.fromarray(arr)


def test_sign_train_never_mirrors():
    transform = build_transform("sign_train", 32, MEAN, STD, rotation=10, sharpness=2.0, blur=1.0)
    torch.manual_seed(0)
    for _ in range(30):
        out = transform(left_red_right_blue())
        red_left, red_right = out[0, :, :8].mean(), out[0, :, -8:].mean()
        assert red_left > red_right  # a flip would put the red half on the right


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_have_no_flip_and_take_pil_or_uint8(name):
    transform = build_transform(name, 16, MEAN, STD)
    assert not any(isinstance(t, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)) for t in transform.transforms)
    image = left_red_right_blue(20)
    tensor = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())
    for x in (image, tensor):
        out = transform(x)
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="sign_train"):
        build_transform("flipper", 16, MEAN, STD)


def test_compute_mean_std_matches_hand_values(tmp_path):
    red = tmp_path / "red.png"
    blue = tmp_path / "blue.png"
    Image.fromarray(np.full((4, 4, 3), (255, 0, 0), dtype=np.uint8)).save(red)
    Image.fromarray(np.full((4, 4, 3), (0, 0, 255), dtype=np.uint8)).save(blue)
    mean, std = compute_mean_std([red, blue], image_size=None)
    assert mean == pytest.approx([0.5, 0.0, 0.5]) and std == pytest.approx([0.5, 0.0, 0.5])


def test_dataset_normalization_is_taken_from_the_train_split(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "tree" / c / f"{i}.png", seed=10 * ord(c) + i)
    dm = FolderDataModule(root=str(tmp_path / "tree"), normalization="dataset", cache_dir=str(tmp_path / "c"),
                          val_fraction=0.0, test_fraction=0.0)
    dm.setup()
    expected_mean, expected_std = compute_mean_std([s.path for s in dm.train_samples])
    dm.configure_preprocessing(image_size=16, mean=[0.1] * 3, std=[0.2] * 3)  # the backbone's must not win
    assert dm.preprocessing == {"image_size": 16, "mean": expected_mean, "std": expected_std}
    again = FolderDataModule(root=str(tmp_path / "tree"), normalization="dataset", cache_dir=str(tmp_path / "c"),
                             val_fraction=0.0, test_fraction=0.0)
    again.setup()  # served from the stats cache
    assert again.mean == expected_mean
