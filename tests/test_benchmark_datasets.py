"""The benchmark datamodules on tiny fake copies of each dataset in its real on-disk layout.

Layouts as CoOp's DATASETS.md and datasets/*.py lay them out (KaiyangZhou/CoOp @ ff61507c,
e.g. datasets/oxford_pets.py:122-138 ``read_split``, datasets/fgvc_aircraft.py:22-31,
datasets/imagenet.py:78-91, datasets/imagenetv2.py:31-44, datasets/imagenet_a.py:32-44), the
task_vectors RESISC45 layout and torchvision's SVHN/MNIST files, each loaded through its Hydra
config, the way torchvision's own dataset tests build fake archives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import compose
from data_trees import write_png

from clipft.data.benchmarks import COOP_DATASETS, CoOpDataModule, ImageNetVariantDataModule, dataset_templates
from clipft.data.benchmarks.templates import _table, benchmark_names, clip_class_names
from clipft.errors import ConfigError, DataError
from clipft.pipeline.building import build_datamodule
from clipft.prompts import package_file

CLASSES = ["great_pyrenees", "pug", "sphynx"]  # raw split-file names; class_names read "_" as a space
SPLIT_SIZES = {"train": 5, "val": 2, "test": 2}  # per class
SPLIT_JSON = [name for name, spec in COOP_DATASETS.items() if spec.kind == "split_json"]


def load(name: str, tmp_path: Path, *overrides: str):
    """The datamodule of conf/data/<name>.yaml over tmp_path/data (paths.data_dir), set up."""
    cfg = compose([f"data={name}", *overrides], root=tmp_path)
    dm = build_datamodule(cfg)
    dm.setup()
    return dm


def make_split_json_dataset(data: Path, name: str) -> dict[str, list[str]]:
    """``<folder>/<image_dir>/<class>/<i>.jpg`` and a split_zhou JSON listing them; returns the paths per split."""
    spec = COOP_DATASETS[name]
    folder = data / spec.folder
    image_root = folder / spec.image_dir
    prefix = "cars_train/" if name == "stanford_cars" else ""  # Stanford Cars' paths start at the dataset folder
    split, paths = {}, {}
    for s, count in SPLIT_SIZES.items():
        split[s], paths[s] = [], []
        for label, cls in enumerate(CLASSES):
            for i in range(count):
                relative = f"{prefix}{cls}/{s}_{i}.jpg"
                write_png(image_root / relative, seed=hash((s, label, i)) % 2**31)
                split[s].append([relative, label, cls])
                paths[s].append(str(image_root / relative))
    (folder / str(spec.split_file)).write_text(json.dumps(split))
    return paths


@pytest.mark.parametrize("name", SPLIT_JSON)
def test_split_file_datasets_keep_coop_splits(name, tmp_path):
    paths = make_split_json_dataset(tmp_path / "data", name)
    dm = load(name, tmp_path)
    assert isinstance(dm, CoOpDataModule) and dm.dataset == name
    assert dm.class_names == ["great pyrenees", "pug", "sphynx"]  # label order, '_' read as a space (coop.py:98)
    assert (len(dm.train_samples), len(dm.val_samples), len(dm.test_samples)) == (15, 6, 6)
    # the split file's val and test are used as listed, not re-drawn
    for split in ("train", "val", "test"):
        got = sorted((s.path, s.label) for s in getattr(dm, f"{split}_samples"))
        assert got == sorted((p, CLASSES.index(Path(p).parent.name)) for p in paths[split])


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        (["pug/test_0.jpg", 2, "pug"], "label 2 is named 'pug' here and 'sphynx' before"),  # one id, two names
        (["../../secret.jpg", 1, "pug"], "leaves the image folder"),  # a path out of the dataset
        (["pug/test_0.jpg", 7, "pug"], r"labels must be 0..K-1, but \[3, 4, 5, 6\] never occur"),
    ],
)
def test_a_corrupt_split_file_is_refused(entry, error, tmp_path):
    make_split_json_dataset(tmp_path / "data", "dtd")
    split_file = tmp_path / "data" / "dtd" / "split_zhou_DescribableTextures.json"
    split = json.loads(split_file.read_text())
    split["test"][-1] = entry
    split_file.write_text(json.dumps(split))
    with pytest.raises(DataError, match=error):
        load("dtd", tmp_path)


def test_fgvc_aircraft_reads_its_variant_lists(tmp_path):
    folder = tmp_path / "data" / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F-16A/B"]
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    for s, count in SPLIT_SIZES.items():
        lines = []
        for label, variant in enumerate(variants):
            for i in range(count):
                image_id = f"{label}{i}{len(s)}0000"[:7]
                write_png(folder / "images" / f"{image_id}.jpg", seed=label * 10 + i)
                lines.append(f"{image_id} {variant}")
        (folder / f"images_variant_{s}.txt").write_text("\n".join(lines) + "\n")
    dm = load("fgvc_aircraft", tmp_path)
    assert dm.class_names == variants
    assert (len(dm.train_samples), len(dm.val_samples), len(dm.test_samples)) == (15, 6, 6)
    listed = (folder / "images_variant_test.txt").read_text().splitlines()
    f16 = {str(folder / "images" / f"{line.split()[0]}.jpg") for line in listed if line.endswith("F-16A/B")}
    assert {s.label for s in dm.test_samples if s.path in f16} == {2}  # label = the line of variants.txt
    assert sorted({s.label for s in dm.val_samples}) == [0, 1, 2]


def write_classnames(folder: Path, names: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in names.items()))


IMAGENET_NAMES = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark",
                  "n01491361": "tiger shark", "n01494475": "hammerhead shark"}


def test_imagenet_carves_20_percent_val_per_class(tmp_path):
    folder = tmp_path / "data" / "imagenet"
    wnids = list(IMAGENET_NAMES)[:3]
    for c, wnid in enumerate(wnids):
        for i in range(10):
            write_png(folder / "images" / "train" / wnid / f"{wnid}_{i}.JPEG", seed=100 * c + i)
        for i in range(3):
            write_png(folder / "images" / "val" / wnid / f"ILSVRC2012_val_{c}{i}.JPEG", seed=1000 + 100 * c + i)
    write_classnames(folder, {w: IMAGENET_NAMES[w] for w in wnids})
    dm = load("imagenet", tmp_path)
    assert dm.class_names == ["tench", "goldfish", "great white shark"]  # sorted wnids, named by classnames.txt
    assert dm.val_fraction == 0.2
    val_per_class = [sum(s.label == c for s in dm.val_samples) for c in range(3)]
    assert val_per_class == [2, 2, 2]  # round(0.2 * 10) of each class, as CoOp's split_trainval
    assert len(dm.train_samples) == 24 and len(dm.test_samples) == 9
    assert not {s.path for s in dm.val_samples} & {s.path for s in dm.train_samples}
    assert all("/images/val/" in s.path for s in dm.test_samples)


def make_variant(data: Path, name: str, folders: list[str]) -> Path:
    spec = {"imagenet_v2": ("imagenetv2", "imagenetv2-matched-frequency-format-val"),
            "imagenet_sketch": ("imagenet-sketch", "images"), "imagenet_a": ("imagenet-adversarial", "imagenet-a"),
            "imagenet_r": ("imagenet-rendition", "imagenet-r")}[name]
    folder = data / spec[0]
    write_classnames(folder, IMAGENET_NAMES)
    for c, sub in enumerate(folders):
        for i in range(2):
            write_png(folder / spec[1] / sub / f"{i}.jpg", seed=10 * c + i)
    (folder / spec[1] / "README.txt").write_text("not a class\n")  # ImageNet-A ships one (imagenet_a.py:8)
    return folder


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_imagenet_a_r_are_200_class_subsets_with_the_imagenet_map(name, tmp_path):
    make_variant(tmp_path / "data", name, ["n01491361", "n01443537"])
    dm = load(name, tmp_path)
    assert isinstance(dm, ImageNetVariantDataModule)
    assert dm.class_names == ["goldfish", "tiger shark"]  # sorted wnids
    assert dm.imagenet_indices == [1, 3]  # their ImageNet labels (classnames.txt lines)
    assert sorted({s.label for s in dm.test_samples}) == [0, 1] and len(dm.test_samples) == 4
    full = load(name, tmp_path, "data.label_space=imagenet")
    assert full.class_names == list(IMAGENET_NAMES.values())
    assert sorted({s.label for s in full.test_samples}) == [1, 3]


def test_imagenet_v2_and_sketch_use_imagenet_labels(tmp_path):
    make_variant(tmp_path / "data", "imagenet_v2", ["4", "0"])  # folder i = i-th class of classnames.txt
    v2 = load("imagenet_v2", tmp_path)
    assert v2.class_names == list(IMAGENET_NAMES.values())
    assert sorted({(Path(s.path).parent.name, s.label) for s in v2.test_samples}) == [("0", 0), ("4", 4)]
    make_variant(tmp_path / "data", "imagenet_sketch", ["n01484850"])
    sketch = load("imagenet_sketch", tmp_path)
    assert {s.label for s in sketch.test_samples} == {2} and sketch.num_classes == 5


def test_resisc45_seeded_and_listed_splits(tmp_path):
    image_dir = tmp_path / "data" / "resisc45" / "NWPU-RESISC45"
    classes = ["baseball_diamond", "beach", "sea_ice"]
    for c, cls in enumerate(classes):
        for i in range(10):
            write_png(image_dir / cls / f"{cls}_{i:03d}.jpg", seed=100 * c + i)
    dm = load("resisc45", tmp_path)
    assert dm.class_names == ["baseball diamond", "beach", "sea ice"]
    # 60/20/20 per class: 2 test, then round(0.25 * 8) = 2 val
    assert (len(dm.train_samples), len(dm.val_samples), len(dm.test_samples)) == (18, 6, 6)
    again = load("resisc45", tmp_path)
    assert [s.path for s in again.test_samples] == [s.path for s in dm.test_samples]  # seeded
    for split, ids in (("train", range(0, 6)), ("val", range(6, 8)), ("test", range(8, 10))):
        names = [f"{cls}_{i:03d}.jpg" for cls in classes for i in ids]
        (image_dir.parent / f"resisc45-{split}.txt").write_text("\n".join(names) + "\n")
    listed = load("resisc45", tmp_path, "data.split=lists")
    assert sorted(Path(s.path).name for s in listed.test_samples) == sorted(f"{c}_{i:03d}.jpg" for c in classes for i in (8, 9))
    assert len(listed.train_samples) == 18 and len(listed.val_samples) == 6


def write_idx(path: Path, array: np.ndarray) -> None:
    """An MNIST idx file (big-endian dims after a magic of 0x0800 | ndim, uint8 data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["svhn", "mnist"])
def test_digits_from_torchvision_files(name, tmp_path):
    rng = np.random.default_rng(0)
    labels = {"train": np.repeat(np.arange(10), 5), "test": np.repeat(np.arange(10), 1)}
    folder = tmp_path / "data" / name
    for split, y in labels.items():
        if name == "svhn":
            from scipy.io import savemat

            folder.mkdir(parents=True, exist_ok=True)
            stored = np.where(y == 0, 10, y)  # SVHN writes the digit 0 as 10
            savemat(folder / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, len(y)), dtype=np.uint8),
                                                    "y": stored.reshape(-1, 1)})
        else:
            prefix = "train" if split == "train" else "t10k"
            write_idx(folder / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (len(y), 28, 28)))
            write_idx(folder / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", y)
    dm = load(name, tmp_path)
    assert dm.class_names == [str(d) for d in range(10)]
    assert len(dm.test_samples) == 10 and sorted(s.label for s in dm.test_samples) == list(range(10))
    assert [sum(s.label == d for s in dm.val_samples) for d in range(10)] == [1] * 10  # round(0.2 * 5)
    assert len(dm.train_samples) == 40
    assert all(Path(s.path).parent.name == str(s.label) for s in dm.train_samples + dm.test_samples)
    assert (folder / "png" / "train" / "complete.txt").read_text().strip() == "50"


MISSING = [  # (config, what is there already, what the message must name)
    ("oxford_pets", "folder", "split_zhou_OxfordPets.json"),
    ("caltech101", "", "caltech-101"),
    ("imagenet", "folder", "images/train"),
    ("fgvc_aircraft", "folder", "variants.txt"),
    ("imagenet_a", "", "imagenet-adversarial"),
    ("resisc45", "", "resisc45"),
    ("svhn", "", "svhn"),
]


@pytest.mark.parametrize(("name", "present", "named"), MISSING)
def test_a_missing_file_is_one_line_naming_it_and_its_source(name, present, named, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    if present:
        spec = COOP_DATASETS[name]
        (data / spec.folder / spec.image_dir).mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load(name, tmp_path)
    message = str(info.value)
    assert "\n" not in message and named in message and "download" in message and "http" in message


def test_templates_match_the_class_count_and_the_prompt_configs():
    assert dataset_templates("oxford_pets") == ["a photo of a {}, a type of pet."]
    assert len(dataset_templates("imagenet", "clip")) == 80
    assert dataset_templates("eurosat", "clip", class_names=clip_class_names("eurosat"))[0] == "a centered satellite photo of {}."
    with pytest.raises(DataError, match="37 classes but 3 class names"):
        dataset_templates("oxford_pets", class_names=CLASSES)
    with pytest.raises(ConfigError, match="no 'coop' template"):
        dataset_templates("svhn", "coop")
    for name in benchmark_names():
        names = _table("classnames").get(name)
        if names is not None:
            assert len(names["names"]) == _table("templates")[name]["num_classes"], name
        for style in ("coop", "clip"):
            path = package_file(f"conf/prompts/{style}/{name}.yaml")
            if _table("templates")[name].get(style):
                assert yaml.safe_load(path.read_text())["templates"] == dataset_templates(name, style), path
            else:
                assert not path.exists()


def test_a_dataset_prompt_set_is_selectable(tmp_path):
    cfg = compose(["data=oxford_pets", "model=clip_zeroshot", "prompts@model.prompts=coop/oxford_pets"], root=tmp_path)
    assert list(cfg.model.prompts.templates) == ["a photo of a {}, a type of pet."]
