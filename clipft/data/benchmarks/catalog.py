"""Where each benchmark lives on disk, as data: one :class:`BenchmarkSpec` per dataset.

The layouts are CoOp's (KaiyangZhou/CoOp @ ff61507c790454bce7c5052c3ac39e60772f1f89,
DATASETS.md and ``datasets/<name>.py``: ``dataset_dir``, ``image_dir`` and ``split_path`` of each
class, e.g. datasets/oxford_pets.py:14-21, datasets/stanford_cars.py:14-24 whose split paths start
at the dataset folder itself), so a ``$DATA`` folder prepared for CoOp, CoCoOp, MaPLe, PromptSRC,
Tip-Adapter or CLAP reads as is. The URLs are the ones DATASETS.md sends users to.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipft.errors import ConfigError

# the split files and ImageNet's classnames.txt are shared by CoOp on Google Drive (DATASETS.md)
DRIVE = "https://drive.google.com/file/d/{}/view?usp=sharing"


@dataclass(frozen=True)
class BenchmarkSpec:
    """One dataset's on-disk contract: ``<root>/<folder>/<image_dir>/...`` plus its split source.

    ``split_file``: CoOp's ``split_zhou_*.json`` (None: the dataset's own files, see ``kind``).
    ``kind``: ``split_json`` | ``fgvc_txt`` (images_variant_*.txt) | ``imagenet`` (train/val folders).
    ``images_url`` / ``split_url``: where the images and the split file (ImageNet: classnames.txt) come from.
    """

    name: str
    title: str
    folder: str
    image_dir: str
    num_classes: int
    images_url: str
    kind: str = "split_json"
    split_file: str | None = None
    split_url: str | None = None


COOP_DATASETS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "imagenet", "ImageNet", "imagenet", "images", 1000, "https://image-net.org/download.php", kind="imagenet",
            split_url=DRIVE.format("1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"),  # classnames.txt
        ),
        BenchmarkSpec(
            "caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", 100,
            "http://www.vision.caltech.edu/Image_Datasets/Caltech101/101_ObjectCategories.tar.gz",
            split_file="split_zhou_Caltech101.json", split_url=DRIVE.format("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
        ),
        BenchmarkSpec(
            "oxford_pets", "OxfordPets", "oxford_pets", "images", 37,
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
            split_file="split_zhou_OxfordPets.json", split_url=DRIVE.format("1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
        ),
        BenchmarkSpec(  # split paths start at the dataset folder (cars_train/..., cars_test/...)
            "stanford_cars", "StanfordCars", "stanford_cars", "", 196,
            "http://ai.stanford.edu/~jkrause/car196/cars_train.tgz (and cars_test.tgz)",
            split_file="split_zhou_StanfordCars.json", split_url=DRIVE.format("1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
        ),
        BenchmarkSpec(
            "flowers102", "Flowers102", "oxford_flowers", "jpg", 102,
            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
            split_file="split_zhou_OxfordFlowers.json", split_url=DRIVE.format("1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        ),
        BenchmarkSpec(
            "food101", "Food101", "food-101", "images", 101,
            "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
            split_file="split_zhou_Food101.json", split_url=DRIVE.format("1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
        ),
        BenchmarkSpec(  # no split_zhou file: CoOp reads the dataset's own lists (datasets/fgvc_aircraft.py:22-31)
            "fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "images", 100,
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz "
            "(keep its data/ folder, renamed fgvc_aircraft/)",
            kind="fgvc_txt",
        ),
        BenchmarkSpec(
            "sun397", "SUN397", "sun397", "SUN397", 397, "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
            split_file="split_zhou_SUN397.json", split_url=DRIVE.format("1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
        ),
        BenchmarkSpec(
            "dtd", "DTD", "dtd", "images", 47, "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
            split_file="split_zhou_DescribableTextures.json", split_url=DRIVE.format("1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
        ),
        BenchmarkSpec(
            "eurosat", "EuroSAT", "eurosat", "2750", 10, "http://madm.dfki.de/files/sentinel/EuroSAT.zip",
            split_file="split_zhou_EuroSAT.json", split_url=DRIVE.format("1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
        ),
        BenchmarkSpec(
            "ucf101", "UCF101", "ucf101", "UCF-101-midframes", 101,
            DRIVE.format("10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O") + " (UCF-101-midframes.zip)",
            split_file="split_zhou_UCF101.json", split_url=DRIVE.format("1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
        ),
    )
}


@dataclass(frozen=True)
class VariantSpec:
    """An ImageNet evaluation set in CoOp's layout (datasets/imagenetv2.py, imagenet_sketch.py, imagenet_a.py, imagenet_r.py).

    ``folders``: ``index`` (class folders named 0..999 in classnames.txt order: ImageNetV2) or
    ``wnid`` (class folders named by WordNet id). ``subset``: the set covers 200 of the 1000 classes.
    """

    name: str
    title: str
    folder: str
    image_dir: str
    folders: str
    num_classes: int
    images_url: str


IMAGENET_VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec(
            "imagenet_v2", "ImageNet-V2", "imagenetv2", "imagenetv2-matched-frequency-format-val", "index", 1000,
            "https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz",
        ),
        VariantSpec(
            "imagenet_sketch", "ImageNet-Sketch", "imagenet-sketch", "images", "wnid", 1000,
            "https://github.com/HaohanWang/ImageNet-Sketch",
        ),
        VariantSpec(
            "imagenet_a", "ImageNet-A", "imagenet-adversarial", "imagenet-a", "wnid", 200,
            "https://github.com/hendrycks/natural-adv-examples",
        ),
        VariantSpec(
            "imagenet_r", "ImageNet-R", "imagenet-rendition", "imagenet-r", "wnid", 200,
            "https://github.com/hendrycks/imagenet-r",
        ),
    )
}


def coop_spec(dataset: str) -> BenchmarkSpec:
    """The table row of ``dataset``; an unknown name lists the known ones."""
    if dataset not in COOP_DATASETS:
        raise ConfigError(f"data.dataset={dataset!r} is not a CoOp benchmark; choose one of {sorted(COOP_DATASETS)}")
    return COOP_DATASETS[dataset]


def variant_spec(variant: str) -> VariantSpec:
    if variant not in IMAGENET_VARIANTS:
        raise ConfigError(f"data.variant={variant!r} is not an ImageNet variant; choose one of {sorted(IMAGENET_VARIANTS)}")
    return IMAGENET_VARIANTS[variant]
