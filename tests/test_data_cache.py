"""The decoded-image cache and the fingerprint index: same pixels as decoding, reuse, invalidation."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from data_trees import make_traffic_signs, write_png

import clipft.data.fingerprints as fingerprints_module
from clipft.data import DecodedImageCache, TrafficSignsDataModule
from clipft.data.cache import resize_square
from clipft.data.fingerprints import FingerprintIndex
from clipft.data.images import load_rgb


def files(tmp_path, n=4):
    return [str(write_png(tmp_path / "img" / f"{i}.png", seed=i, size=12)) for i in range(n)]


def test_cache_rows_equal_decoded_images_and_are_reused(tmp_path):
    paths = files(tmp_path)
    cache = DecodedImageCache(paths, 8, tmp_path / "cache", "t").ensure()
    assert cache.rebuilt and cache.array.shape == (4, 3, 8, 8) and cache.array.dtype == np.uint8
    for p in paths:
        assert torch.equal(cache.image(p), torch.from_numpy(resize_square(load_rgb(p), 8)))
    again = DecodedImageCache(paths, 8, tmp_path / "cache", "t").ensure()
    assert not again.rebuilt
    assert isinstance(again.array, np.memmap)


def test_cache_rebuilds_when_a_file_or_the_size_changes(tmp_path):
    paths = files(tmp_path)
    DecodedImageCache(paths, 8, tmp_path / "cache", "t").ensure()
    write_png(tmp_path / "img" / "2.png", seed=99, size=12)  # new content
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = DecodedImageCache(paths, 8, tmp_path / "cache", "t").ensure()
    assert changed.rebuilt
    assert torch.equal(changed.image(paths[2]), torch.from_numpy(resize_square(load_rgb(paths[2]), 8)))
    assert DecodedImageCache(paths, 6, tmp_path / "cache", "t").ensure().rebuilt  # other resolution
    assert DecodedImageCache(paths[:3], 8, tmp_path / "cache", "t").ensure().rebuilt  # file removed


def test_two_sample_lists_never_share_one_cache_array(tmp_path):
    """Runs with different splits (e.g. data.dedupe=none vs drop) read their own rows, even concurrently."""
    paths = files(tmp_path, n=5)
    first = DecodedImageCache(paths[:3], 8, tmp_path / "cache", "t").ensure()
    first_rows = {p: first.image(p).clone() for p in paths[:3]}
    second = DecodedImageCache(paths[1:], 8, tmp_path / "cache", "t").ensure()
    assert second.array_file != first.array_file
    reopened = DecodedImageCache(paths[:3], 8, tmp_path / "cache", "t")
    reopened._array = None  # a DataLoader worker re-opening the memmap after the other run built its cache
    for p in paths[:3]:
        assert torch.equal(reopened.image(p), first_rows[p])
    assert not DecodedImageCache(paths[:3], 8, tmp_path / "cache", "t").ensure().rebuilt


def test_resize_square_keeps_the_centre():
    from PIL import Image

    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, 10:20] = 255  # white centre third
    out = resize_square(Image.fromarray(wide), 10)
    assert out.shape == (3, 10, 10) and out.min() > 200


def test_fingerprint_index_decodes_only_changed_files(tmp_path, monkeypatch):
    paths = files(tmp_path)
    calls = []
    real = fingerprints_module.decode_pixels
    monkeypatch.setattr(fingerprints_module, "decode_pixels", lambda p: calls.append(p) or real(p))
    index_file = tmp_path / "fp.json"
    first = FingerprintIndex(index_file).lookup(paths)
    assert len(calls) == 4 and index_file.is_file()
    second = FingerprintIndex(index_file).lookup(paths)
    assert len(calls) == 4 and second == first
    write_png(tmp_path / "img" / "1.png", seed=77, size=13)  # different size on disk
    third = FingerprintIndex(index_file).lookup(paths)
    assert len(calls) == 5 and third[calls[-1]].hash != first[calls[-1]].hash


def test_copies_share_a_fingerprint(tmp_path):
    a = write_png(tmp_path / "a.png", seed=3)
    from PIL import Image

    Image.open(a).save(tmp_path / "b.bmp")  # same pixels, another encoding
    prints = FingerprintIndex(None).lookup([a, tmp_path / "b.bmp", write_png(tmp_path / "c.png", seed=4)])
    hashes = [f.hash for f in prints.values()]
    assert hashes[0] == hashes[1] != hashes[2]


@pytest.mark.parametrize("augment_on_device", [False, True])
def test_datamodule_serves_cached_batches(tmp_path, augment_on_device):
    root = make_traffic_signs(tmp_path / "ts", per_class=(3, 3, 3, 3))
    dm = TrafficSignsDataModule(
        root=str(root), cache=True, cache_dir=str(tmp_path / "cache"), image_size=8, batch_size=4,
        augment_on_device=augment_on_device, transform_options={"rotation": 0},
    )
    dm.setup()
    assert dm.stored_size == 9  # round(8 * 256 / 224)
    images, labels = next(iter(dm.val_dataloader()))
    if augment_on_device:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 9, 9)
        images, labels = dm.on_after_batch_transfer((images, labels), 0)
    assert images.dtype == torch.float32 and images.shape[1:] == (3, 8, 8)
    first = dm.val_samples[0].path
    expected = dm.transform(train=False)(dm.decoded_cache().image(str(os.path.realpath(first))))
    assert torch.equal(images[0], expected)  # the eval transform applied to the cached row
    assert labels[0] == dm.val_samples[0].label


def test_few_shot_draws_share_the_test_split_array(tmp_path):
    """One array per split: the test split every draw shares is decoded once, each draw adds only its shots."""
    root = make_traffic_signs(tmp_path / "ts", per_class=(8, 8, 8))
    cache_dir = tmp_path / "cache"

    def draw(seed):
        dm = TrafficSignsDataModule(root=str(root), cache=True, cache_dir=str(cache_dir), image_size=8, batch_size=4,
                                    shots=1, shot_seed=seed)
        dm.setup()
        return dm, dm.make_dataset(dm.train_samples, train=True).cache, dm.make_dataset(dm.test_samples, train=False).cache

    first, first_train, first_test = draw(0)
    second, second_train, second_test = draw(3)
    assert {s.path for s in first.train_samples} != {s.path for s in second.train_samples}
    assert second_test.array_file == first_test.array_file and not second_test.rebuilt  # decoded once, by the first draw
    assert second_train.array_file != first_train.array_file and second_train.rebuilt
    assert len(second_train.paths) == len(second.train_samples) == 3  # the draw's own shots, not the pool
    some_test = second.make_dataset(second.test_samples[:2], train=False).cache  # a bank's missing rows: a subset
    assert some_test is second_test and len(some_test.paths) == len(second.test_samples)
    stored = sorted(cache_dir.glob("decoded-*.npy"))
    assert stored == sorted({first_train.array_file, second_train.array_file, first_test.array_file})  # 3 arrays, not 4
