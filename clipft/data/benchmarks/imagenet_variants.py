"""ImageNet-V2, -Sketch, -A and -R: evaluation sets in CoOp's layout, with their ImageNet label map.

Layouts (KaiyangZhou/CoOp @ ff61507c790454bce7c5052c3ac39e60772f1f89, DATASETS.md "ImageNetV2" ... "ImageNet-R"):

* ``imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/*``: folder ``i`` is the i-th
  class of ``classnames.txt`` (datasets/imagenetv2.py:31-44);
* ``imagenet-sketch/images/<wnid>/*`` (datasets/imagenet_sketch.py:30-40);
* ``imagenet-adversarial/imagenet-a/<wnid>/*`` and ``imagenet-rendition/imagenet-r/<wnid>/*``:
  200 of the 1000 classes; CoOp labels them 0..199 in sorted-wnid order (datasets/imagenet_a.py:32-44),
  and each set's folder holds a copy of ImageNet's ``classnames.txt``.

``classnames.txt`` lists the 1000 wnids in sorted order, which is ImageNet's label order
(datasets/imagenet.py:80), so a wnid's line number is its ImageNet label. For A and R the
datamodule records ``imagenet_indices``: entry ``i`` is the ImageNet label of subset class ``i``,
so a 1000-way ImageNet model is scored on them with ``logits[:, dm.imagenet_indices]`` (the usual
protocol: the argmax over the 200 classes). ``label_space: imagenet`` instead keeps the 1000 ImageNet
labels and names (an argmax over all 1000 classes).

These sets are for evaluation only: the test images are also the train pool and val (CoOp's
``train_x=data, test=data``, imagenet_a.py:30), so that ``eval.py`` runs; never train on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipft.data.base import ImageClassificationDataModule
from clipft.data.benchmarks.catalog import COOP_DATASETS, VariantSpec, variant_spec
from clipft.data.benchmarks.coop import require
from clipft.data.benchmarks.readers import read_imagenet_classnames
from clipft.data.folder import scan_class_folders
from clipft.data.samples import DatasetIndex, Sample
from clipft.errors import ConfigError, DataError

LABEL_SPACES = ("subset", "imagenet")


class ImageNetVariantDataModule(ImageClassificationDataModule):
    """An ImageNet evaluation set (``imagenet_v2`` | ``imagenet_sketch`` | ``imagenet_a`` | ``imagenet_r``).

    Args:
        variant: which set.
        root: the folder holding the set's folder (CoOp's ``$DATA``).
        label_space: for A and R: ``subset`` (200 labels, ``imagenet_indices`` maps them) or ``imagenet``.
        follow_symlinks: class folders may be symlinks to elsewhere (refused by default).
    """

    def __init__(
        self, variant: str, root: str, label_space: str = "subset", follow_symlinks: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.follow_symlinks = bool(follow_symlinks)
        self.spec: VariantSpec = variant_spec(variant)
        self.variant = variant
        self.root = root
        if label_space not in LABEL_SPACES:
            raise ConfigError(f"data.label_space={label_space!r} must be one of {list(LABEL_SPACES)}")
        self.label_space = label_space
        self.imagenet_indices: list[int] = []  # ImageNet label of each class, filled by setup()
        self.wnids: list[str] = []

    def build_index(self) -> DatasetIndex:
        spec = self.spec
        root = self.resolve(self.root, hint=f" (the folder holding {spec.folder}/, CoOp's $DATA)")
        folder = require(root / spec.folder, spec.title, "the dataset folder", spec.images_url)
        image_dir = require(folder / spec.image_dir, spec.title, "the image folder", spec.images_url)
        imagenet = COOP_DATASETS["imagenet"]
        names_file = require(folder / "classnames.txt", spec.title, "a copy of ImageNet's classnames.txt",
                             f"{imagenet.split_url} (as for imagenet/)")
        wnid_names = read_imagenet_classnames(names_file)
        all_wnids = list(wnid_names)
        if all_wnids != sorted(all_wnids):
            raise DataError(f"{spec.title}: {str(names_file)!r} must list the wnids in sorted order (ImageNet's label order)")
        present, wnids = self._class_folders(image_dir, all_wnids, names_file)
        _, samples = scan_class_folders(image_dir, class_names=present, follow_symlinks=self.follow_symlinks)
        position = {w: i for i, w in enumerate(all_wnids)}
        to_imagenet = [position[w] for w in wnids]
        if spec.num_classes == 1000 or self.label_space == "imagenet":
            samples = [Sample(s.path, to_imagenet[s.label]) for s in samples]
            names, self.wnids, self.imagenet_indices = list(wnid_names.values()), all_wnids, list(range(len(all_wnids)))
        else:
            names, self.wnids, self.imagenet_indices = [wnid_names[w] for w in wnids], wnids, to_imagenet
        return DatasetIndex(class_names=names, train_pool=samples, val=list(samples), test=list(samples))

    def _class_folders(self, image_dir: Path, all_wnids: list[str], names_file: Path) -> tuple[list[str], list[str]]:
        """The class folders present and their wnids (ImageNet-V2's folders are ``classnames.txt`` line numbers)."""
        folders = sorted(d.name for d in image_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if self.spec.folders == "index":
            folders = sorted(folders, key=lambda f: int(f) if f.isdigit() else -1)
            unknown = [f for f in folders if not f.isdigit() or int(f) >= len(all_wnids)]
            wnids = [all_wnids[int(f)] for f in folders if f not in unknown]
        else:
            unknown = [f for f in folders if f not in set(all_wnids)]
            wnids = folders
        if unknown:
            raise DataError(f"{self.spec.title}: class folders {unknown[:5]} of {str(image_dir)!r} are not classes of "
                            f"{str(names_file)!r}; remove them or fix the file")
        return folders, wnids
