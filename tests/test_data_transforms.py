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


def test_random_downscale_softens_fine_detail_and_keeps_the_size():
    from clipft.data.transforms import RandomDownscale

    checker = (torch.arange(32).view(1, 32) + torch.arange(32).view(32, 1)) % 2 * 255
    image = checker.to(torch.uint8).expand(3, 32, 32).contiguous()
    torch.manual_seed(0)
    outs = [RandomDownscale(min_scale=0.25, p=1.0)(image) for _ in range(20)]
    assert all(out.shape == image.shape and out.dtype == torch.uint8 for out in outs)
    # a 1-px checkerboard does not survive a trip through a smaller size: it blurs towards grey
    mean_std = sum(out.float().std() for out in outs) / len(outs)
    assert mean_std < 0.5 * image.float().std()
    assert torch.equal(RandomDownscale(min_scale=0.25, p=0.0)(image), image)


def test_random_downscale_rejects_bad_options():
    from clipft.data.transforms import RandomDownscale

    with pytest.raises(ConfigError, match="downscale"):
        RandomDownscale(min_scale=1.5)
    with pytest.raises(ConfigError, match="downscale_p"):
        RandomDownscale(min_scale=0.5, p=2.0)


def test_sign_train_downscale_option_adds_the_step():
    from clipft.data.transforms import RandomDownscale

    plain = build_transform("sign_train", 16, MEAN, STD)
    with_downscale = build_transform("sign_train", 16, MEAN, STD, downscale=0.3, downscale_p=0.4)
    assert not any(isinstance(t, RandomDownscale) for t in plain.transforms)
    step = next(t for t in with_downscale.transforms if isinstance(t, RandomDownscale))
    assert (step.min_scale, step.p) == (0.3, 0.4)


def test_options_a_preset_ignores_are_named_in_a_warning(caplog):
    with caplog.at_level("WARNING", logger="clipft.data.transforms"):
        build_transform("sign_train", 16, MEAN, STD, rotation=5, downscal=0.3)
    assert "['downscal'] are ignored by the 'sign_train' preset" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="clipft.data.transforms"):
        build_transform("trivialaugment", 16, MEAN, STD, rotation=5)
    assert "['rotation']" in caplog.text and "'trivialaugment'" in caplog.text
