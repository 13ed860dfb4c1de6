"""The three datasets of the 8-task model-merging suite that CoOp's table lacks: RESISC45, SVHN, MNIST.

The suite (task arithmetic, Ilharco et al. 2023; mlfoundations/task_vectors @
826a64c67082fab0f40628233287948f0f8d7fa3, src/datasets/registry.py) is SUN397, StanfordCars,
RESISC45, EuroSAT, SVHN, GTSRB, MNIST and DTD: clipft reads SUN397, StanfordCars, EuroSAT and DTD
with :class:`~clipft.data.benchmarks.coop.CoOpDataModule` (CoOp's splits, not task_vectors') and
GTSRB with :class:`~clipft.data.gtsrb.GTSRBDataModule`.

* RESISC45: ``<root>/resisc45/NWPU-RESISC45/<class>/*.jpg`` (task_vectors src/datasets/resisc45.py:189).
  ``split: seeded`` holds out ``test_fraction`` of each class (seed + 1), then ``val_fraction`` of
  the rest (seed): the configs' 0.2 and 0.25 give 60/20/20 per class, the proportions of the split
  task_vectors uses. ``split: lists`` reads that split instead: ``<root>/resisc45/resisc45-{train,val,test}.txt``
  (one file name per line; resisc45.py:192-196, :267-276). Class names: the folder names with
  ``_`` as a space (resisc45.py:303-304), in sorted-folder (label) order.
* SVHN and MNIST: torchvision's files (``download=true`` fetches them), exported once to PNG files
  under ``<root>/<name>/png/<split>/<label>/`` so the shared loaders, cache and fingerprints apply;
  the official train/test, val held out of train (``val_fraction``). Class names ``"0".."9"``
  (task_vectors src/datasets/svhn.py:45, mnist.py:41; SVHN's label 10 is the digit 0).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from clipft.data.base import ImageClassificationDataModule
from clipft.data.benchmarks.coop import require
from clipft.data.benchmarks.readers import display_name, read_lines
from clipft.data.folder import scan_class_folders
from clipft.data.samples import DatasetIndex, Sample
from clipft.errors import ConfigError, DataError

log = logging.getLogger(__name__)
DIGITS = [str(i) for i in range(10)]
# the archive task_vectors names (src/datasets/resisc45.py:186-188): NWPU-RESISC45.rar, extracted into resisc45/
RESISC45_URL = "https://drive.google.com/file/d/1DnPSU5nVSN7xv95bpZ3XQ0JhKXZOKgIv (NWPU-RESISC45.rar)"
# where torchvision's SVHN and MNIST download from (torchvision.datasets.SVHN.split_list, MNIST.mirrors)
DIGIT_SOURCES = {
    "svhn": "http://ufldl.stanford.edu/housenumbers/{train,test}_32x32.mat",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/ (the four *-ubyte.gz files, unpacked into MNIST/raw/)",
}
RESISC45_SPLIT_URL = "https://storage.googleapis.com/remote_sensing_representations/resisc45-{}.txt"


class RESISC45DataModule(ImageClassificationDataModule):
    """NWPU-RESISC45 (45 scene classes, 700 images each) from its class folders."""

    def __init__(self, root: str, split: str = "seeded", follow_symlinks: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if split not in ("seeded", "lists"):
            raise ConfigError(f"data.split={split!r} must be 'seeded' or 'lists'")
        self.root, self.split, self.follow_symlinks = root, split, bool(follow_symlinks)

    def build_index(self) -> DatasetIndex:
        root = self.resolve(self.root, hint=" (the folder holding resisc45/)")
        folder = require(root / "resisc45", "RESISC45", "the dataset folder", RESISC45_URL)
        image_dir = require(folder / "NWPU-RESISC45", "RESISC45", "the image folder", RESISC45_URL)
        folders, samples = scan_class_folders(image_dir, follow_symlinks=self.follow_symlinks)
        names = [display_name(f) for f in folders]
        if self.split == "seeded":
            return DatasetIndex(class_names=names, train_pool=samples)
        by_name = {Path(s.path).name: s for s in samples}
        splits: dict[str, list[Sample]] = {}
        for split in ("train", "val", "test"):
            listed = read_lines(require(folder / f"resisc45-{split}.txt", "RESISC45", "the split list",
                                        RESISC45_SPLIT_URL.format(split)))
            absent = [n for n in listed if n not in by_name]
            if absent:
                raise DataError(f"RESISC45: {len(absent)} file(s) of resisc45-{split}.txt are not under {str(image_dir)!r}, "
                                f"e.g. {absent[0]!r}")
            splits[split] = [by_name[n] for n in listed]
        return DatasetIndex(class_names=names, train_pool=splits["train"], val=splits["val"], test=splits["test"])


class DigitsDataModule(ImageClassificationDataModule):
    """SVHN or MNIST (``dataset``) from torchvision's files, exported once to PNGs."""

    def __init__(self, dataset: str, root: str, download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dataset not in DIGIT_SOURCES:
            raise ConfigError(f"data.dataset={dataset!r} must be one of {sorted(DIGIT_SOURCES)}")
        self.dataset, self.root, self.download = dataset, root, bool(download)

    def _root(self, must_exist: bool = True) -> Path:
        from clipft.data.paths import resolve_path

        hint = f" (the folder holding {self.dataset}/), or set data.download=true"
        return resolve_path(self.root, base_dir=self.base_dir, must_exist=must_exist, hint=hint)

    def prepare_data(self) -> None:
        """Download (``download=true``) and write the PNGs once, on one process (Lightning's local rank 0)."""
        if self.download:
            from torchvision import datasets

            folder = self._root(must_exist=False) / self.dataset
            folder.mkdir(parents=True, exist_ok=True)
            for train in (True, False):
                if self.dataset == "svhn":
                    datasets.SVHN(str(folder), split="train" if train else "test", download=True)
                else:
                    datasets.MNIST(str(folder), train=train, download=True)
        self._export_once()

    def _export_once(self) -> Path:
        folder = require(self._root() / self.dataset, self.dataset.upper(), "the dataset folder", DIGIT_SOURCES[self.dataset],
                         ", or set data.download=true")
        for split in ("train", "test"):
            self._export(folder, split)
        return folder

    def build_index(self) -> DatasetIndex:
        if self.download:
            self.prepare_data()
        folder = self._export_once()  # a no-op once written (outside a Trainer nobody calls prepare_data)
        splits = {split: self._exported(folder / "png" / split) for split in ("train", "test")}
        return DatasetIndex(class_names=list(DIGITS), train_pool=splits["train"], test=splits["test"])

    def _export(self, folder: Path, split: str) -> None:
        """The split's images as ``png/<split>/<digit>/<index>.png``, unless a marker says that is done."""
        out = folder / "png" / split
        marker = out / "complete.txt"
        if marker.is_file():
            return
        images, labels = self._read_raw(folder, split)
        log.info("%s: writing %d %s images as PNG under %s (once)", self.dataset, len(labels), split, out)
        from PIL import Image

        for i, (image, label) in enumerate(zip(images, labels)):
            path = out / str(int(label)) / f"{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        marker.write_text(f"{len(labels)}\n")

    @staticmethod
    def _exported(out: Path) -> list[Sample]:
        _, samples = scan_class_folders(out, class_names=[d for d in DIGITS if (out / d).is_dir()])
        return [Sample(s.path, int(Path(s.path).parent.name)) for s in samples]

    def _read_raw(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(N, H, W[, 3]) uint8`` images and ``(N,)`` labels 0..9 from torchvision's files."""
        source = DIGIT_SOURCES[self.dataset]
        if self.dataset == "svhn":
            from scipy.io import loadmat

            mat = loadmat(require(folder / f"{split}_32x32.mat", "SVHN", "the split file", source))
            labels = mat["y"].reshape(-1).astype(np.int64) % 10  # SVHN writes the digit 0 as 10
            return np.transpose(mat["X"], (3, 0, 1, 2)), labels
        from torchvision.datasets.mnist import read_image_file, read_label_file

        prefix = "train" if split == "train" else "t10k"
        raw = folder / "MNIST" / "raw"
        images = read_image_file(str(require(raw / f"{prefix}-images-idx3-ubyte", "MNIST", "the image file", source)))
        labels = read_label_file(str(require(raw / f"{prefix}-labels-idx1-ubyte", "MNIST", "the label file", source)))
        return images.numpy(), labels.numpy()
