"""The 11 datasets of CoOp's few-shot protocol, read from the folders CoOp's users already have.

``CoOpDataModule(dataset="oxford_pets", root="$DATA")`` reads ``$DATA/oxford_pets/`` as CoOp
(KaiyangZhou/CoOp @ ff61507c790454bce7c5052c3ac39e60772f1f89) lays it out in DATASETS.md; the
table of folders, image folders, split files and URLs is :mod:`clipft.data.benchmarks.catalog`.

* split-file datasets: train/val/test as listed in ``split_zhou_<Name>.json`` (datasets/oxford_pets.py:25-26);
* FGVC-Aircraft: its own ``images_variant_{train,val,test}.txt`` (datasets/fgvc_aircraft.py:22-31);
* ImageNet: ``images/train/<wnid>/`` is the pool and ``images/val/<wnid>/`` the test set, classes in
  sorted-wnid order named by ``classnames.txt`` (datasets/imagenet.py:30-35, :78-91). ImageNet has
  no val in its split source: CoOp reuses the test set as val (imagenet.py:61); clipft holds out
  ``val_fraction`` of each class of train instead (the configs set 0.2, CoOp's ``split_trainval``
  p_val, datasets/oxford_pets.py:76-97), so model selection never sees test images.

Labels and class names are the split source's: label ``i`` is ``class_names[i]`` (split files:
their label ids; FGVC: variants.txt order; ImageNet: sorted wnids), names with ``_`` as a space.
A missing file or folder is one :class:`~clipft.errors.DataError` line naming it, the URL it
comes from and where it goes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clipft.data.base import ImageClassificationDataModule
from clipft.data.benchmarks.catalog import BenchmarkSpec, coop_spec
from clipft.data.benchmarks.readers import first_missing, read_fgvc, read_imagenet_classnames, read_split_json
from clipft.data.folder import scan_class_folders
from clipft.data.samples import DatasetIndex, Sample
from clipft.errors import DataError

log = logging.getLogger(__name__)


def require(path: Path, title: str, what: str, source: str, alternative: str = "") -> Path:
    """``path`` if it exists, else one DataError line: what is missing, where it goes and where it comes from."""
    if not path.exists():
        raise DataError(
            f"{title}: {what} {str(path)!r} is missing; download {source} and put it there{alternative} "
            "(layouts: docs/benchmarks.md)"
        )
    return path


class CoOpDataModule(ImageClassificationDataModule):
    """One of CoOp's 11 datasets under ``root`` (CoOp's ``$DATA``), with its fixed splits.

    Args:
        dataset: a name of :data:`~clipft.data.benchmarks.catalog.COOP_DATASETS` (``oxford_pets``, ...).
        root: the folder holding the dataset folders (``oxford_pets/``, ``caltech-101/``, ...).
        follow_symlinks: ImageNet's class folders may be symlinks to elsewhere (refused by default).
        **kwargs: :class:`~clipft.data.base.ImageClassificationDataModule`'s (shots, transforms, ...).
    """

    def __init__(self, dataset: str, root: str, follow_symlinks: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec: BenchmarkSpec = coop_spec(dataset)
        self.dataset = dataset
        self.root = root
        self.follow_symlinks = bool(follow_symlinks)

    def dataset_dir(self) -> Path:
        root = self.resolve(self.root, hint=f" (the folder holding {self.spec.folder}/, CoOp's $DATA)")
        return require(root / self.spec.folder, self.spec.title, "the dataset folder", self.spec.images_url)

    def build_index(self) -> DatasetIndex:
        spec, folder = self.spec, self.dataset_dir()
        if spec.kind == "imagenet":
            return self._imagenet(folder)
        if spec.kind == "fgvc_txt":
            for name in ("variants.txt", *(f"images_variant_{s}.txt" for s in ("train", "val", "test"))):
                require(folder / name, spec.title, "the split list", spec.images_url)
            names, splits = read_fgvc(folder)
        else:
            assert spec.split_file and spec.split_url
            image_root = require(folder / spec.image_dir, spec.title, "the image folder", spec.images_url)
            split_file = require(folder / spec.split_file, spec.title, "CoOp's split file", spec.split_url)
            names, splits = read_split_json(split_file, image_root)
        self._check_images(splits)
        self._note_class_count(len(names))
        return DatasetIndex(class_names=names, train_pool=splits["train"], val=splits["val"], test=splits["test"])

    def _imagenet(self, folder: Path) -> DatasetIndex:
        spec = self.spec
        train_dir = require(folder / "images" / "train", spec.title, "the training folder", spec.images_url)
        val_dir = require(folder / "images" / "val", spec.title, "the validation folder (one wnid folder per class)",
                          spec.images_url)
        names_file = require(folder / "classnames.txt", spec.title, "CoOp's classnames.txt", str(spec.split_url))
        wnid_names = read_imagenet_classnames(names_file)
        wnids = sorted(d.name for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        unknown = [w for w in wnids if w not in wnid_names]
        if unknown:
            raise DataError(f"ImageNet: class folders {unknown[:5]} of {str(train_dir)!r} are not in {str(names_file)!r}")
        _, pool = scan_class_folders(train_dir, class_names=wnids, follow_symlinks=self.follow_symlinks)
        _, test = scan_class_folders(val_dir, class_names=wnids, follow_symlinks=self.follow_symlinks)
        self._note_class_count(len(wnids))
        return DatasetIndex(class_names=[wnid_names[w] for w in wnids], train_pool=pool, test=test)

    def _check_images(self, splits: dict[str, list[Sample]]) -> None:
        for split, samples in splits.items():
            missing, count = first_missing(samples)
            if missing:
                raise DataError(
                    f"{self.spec.title}: {count} image(s) of the {split} split are missing, e.g. {missing!r}; "
                    f"extract {self.spec.images_url} there"
                )

    def _note_class_count(self, found: int) -> None:
        if found != self.spec.num_classes:
            log.warning("%s: %d classes found, the benchmark has %d (a partial copy?)", self.spec.title, found,
                        self.spec.num_classes)
