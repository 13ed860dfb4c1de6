"""The LightningDataModule every clipft dataset shares.

A subclass only says *what* the data is (:meth:`build_index`: class names, a train pool and
optional val/test lists). The base class does the rest the same way for every dataset: it
fingerprints the images (bad-image checks, pixel hashes), hands index, hashes and the
:class:`~clipft.data.split_policy.SplitPolicy` to :func:`~clipft.data.split_policy.make_splits`
(duplicate handling, the train/test leak check, seeded stratified group-aware splits, shots,
the report), and keeps the transforms built from config once the backbone's preprocessing is
known, the optional decoded-image cache and the dataloaders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from clipft.data.cache import CachedImageDataset, DecodedImageCache, cache_key
from clipft.data.few_shot import FewShotSplit, dataset_root, split_from_record, split_record
from clipft.data.fingerprints import FingerprintIndex
from clipft.data.images import load_rgb
from clipft.data.paths import canonical_path, default_cache_dir, resolve_path
from clipft.data.samples import DatasetIndex, Sample
from clipft.data.split_policy import ClassSet, SplitPolicy, make_splits
from clipft.data.split_policy import choice as _choice
from clipft.data.stats import compute_mean_std
from clipft.data.transforms import build_transform
from clipft.errors import ConfigError, DataError
from clipft.utils.arguments import check_image_size
from clipft.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from clipft.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# the defaults when neither the config nor the model says (clipft.utils.constants: one copy of each)
DEFAULT_MEAN, DEFAULT_STD = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
NORMALIZATIONS = ("backbone", "dataset", "imagenet")


class ImageDataset(Dataset):
    """(image, label) pairs from a list of samples, decoded on access."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Any], torch.Tensor] | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        image = load_rgb(sample.path)
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.label


class ImageClassificationDataModule(L.LightningDataModule):
    """Shared checks, splits, transforms and loaders; subclasses implement :meth:`build_index`.

    Args:
        batch_size / eval_batch_size: training and evaluation batch sizes.
        val_fraction: share of each class's train pool held out for validation (seeded, stratified).
        test_fraction: share held out for test when the dataset has no test split of its own.
        seed: the split seed (independent of the training seed, so a sweep keeps one split).
        image_size, mean, std: preprocessing; ``null`` takes the backbone's.
        normalization: where a null mean/std comes from: ``backbone``, ``dataset`` (computed on the
            train split, the seed notebook's choice) or ``imagenet``.
        train_transform / eval_transform: preset names in :mod:`clipft.data.transforms`.
        transform_options: extra keyword arguments for the train preset.
        dedupe: ``none`` | ``drop`` | ``group`` (see :mod:`clipft.data.dedupe`).
        test_view: ``clean`` (test images whose pixels occur in train/val left out) | ``all``.
        on_bad_image: ``error`` (default) | ``skip`` undecodable images (listed in the run directory).
        balanced_sampler: draw training batches with class-balanced weights (with replacement).
        cache: serve images from the decoded-image cache (:mod:`clipft.data.cache`).
        cache_dir: where the cache and the fingerprint index live (default ``~/.cache/clipft``).
        cache_size: stored resolution; ``null``: the train preset's resize size (256 for 224).
        augment_on_device: with ``cache``, run the transforms on the batch after it is moved to the
            accelerator instead of in the loader workers.
        base_dir: relative data paths are tried against cwd, then this (``paths.root_dir``).
        shots / shot_seed: the k-shot protocol (:mod:`clipft.data.few_shot`).
        shot_sampler: ``clipft`` (K distinct images per class, val untouched) | ``coop`` (CoOp's sampler:
            K per class, val ``min(K, 4)`` per class).
        fewshot_split_file: a run's ``fewshot_split.json`` to reuse instead of drawing the shots.
        classes: ``all`` | ``base`` | ``novel``: CoCoOp's half of the classes (:mod:`clipft.data.split_policy`).
        fingerprint_workers: processes hashing images for ``dedupe`` (``null``: every core this
            process may use, shared by the local DDP ranks; 1: serial).
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 42,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalization: str = "backbone",
        train_transform: str = "sign_train",
        eval_transform: str = "clip_eval",
        transform_options: dict[str, Any] | None = None,
        drop_last: bool = False,
        dedupe: str = "group",
        test_view: str = "clean",
        on_bad_image: str = "error",
        balanced_sampler: bool = False,
        cache: bool = False,
        cache_dir: str | None = None,
        cache_size: int | None = None,
        augment_on_device: bool = False,
        base_dir: str | None = None,
        shots: int | None = None,
        shot_seed: int | None = None,
        fingerprint_workers: int | None = None,
        shot_sampler: str = "clipft",
        fewshot_split_file: str | None = None,
        classes: str = "all",
    ) -> None:
        super().__init__()
        self.check_arguments({"batch_size": batch_size, "eval_batch_size": eval_batch_size, "num_workers": num_workers,
                              "image_size": image_size})
        policy = SplitPolicy(  # checks the split arguments
            val_fraction=float(val_fraction), test_fraction=float(test_fraction), seed=int(seed), dedupe=dedupe,
            test_view=test_view, on_bad_image=on_bad_image, shots=shots,
            shot_seed=int(shot_seed) if shot_seed is not None else int(seed), shot_sampler=shot_sampler, classes=classes,
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.val_fraction, self.test_fraction, self.seed = policy.val_fraction, policy.test_fraction, policy.seed
        self.image_size = check_image_size(image_size, "data.image_size")
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None
        self.normalization = _choice("normalization", normalization, NORMALIZATIONS)
        self.train_transform_name = train_transform
        self.eval_transform_name = eval_transform
        self.transform_options = dict(transform_options or {})
        self.drop_last = drop_last
        self.dedupe, self.test_view, self.on_bad_image = policy.dedupe, policy.test_view, policy.on_bad_image
        self.balanced_sampler = bool(balanced_sampler)
        self.use_cache = bool(cache)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.cache_size = int(cache_size) if cache_size else None
        self.augment_on_device = bool(augment_on_device)
        if self.augment_on_device and not self.use_cache:
            raise ConfigError("data.augment_on_device=true needs data.cache=true (equal-size uint8 images to batch)")
        self.base_dir = base_dir
        self.shots, self.shot_seed = policy.shots, policy.shot_seed
        self.shot_sampler, self.classes, self.fewshot_split_file = policy.shot_sampler, policy.classes, fewshot_split_file
        self.held_out: ClassSet | None = None  # with classes=base|novel: the other half's test split
        self.few_shot_split: FewShotSplit | None = None
        self._class_names: list[str] | None = None  # the run's classes (a data.classes half); None: the index's
        if fingerprint_workers is not None and (isinstance(fingerprint_workers, bool) or int(fingerprint_workers) < 1):
            raise ConfigError(f"data.fingerprint_workers must be an integer >= 1 or null (every core), got {fingerprint_workers!r}")
        self.fingerprint_workers = int(fingerprint_workers) if fingerprint_workers is not None else None
        self.index: DatasetIndex | None = None
        self.train_samples: list[Sample] = []
        self.val_samples: list[Sample] = []
        self.test_samples: list[Sample] = []
        self.skipped_images: list[dict[str, str]] = []
        self.split_report: dict[str, Any] = {}
        self._decoded: dict[tuple[tuple[str, ...], int], DecodedImageCache] = {}  # by (paths, size)
        # set by clipft.callbacks.FeatureBankCallback for a frozen image tower: (samples, train) -> dataset of
        # (embedding, label); None: pixels
        self.feature_dataset: Callable[[Sequence[Sample], bool], Dataset] | None = None

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` naming the first bad ``data.*`` value. Each value is checked once, here (the
        split keys by :class:`SplitPolicy`): the constructor calls it, and the pipeline runs it on the config's
        ``data`` node before the data scan. Absent keys are skipped; a datamodule with checks of its own extends it."""
        for key, minimum, allowed in (("batch_size", 1, "an integer >= 1"),
                                      ("eval_batch_size", 1, "an integer >= 1 or null (same as data.batch_size)"),
                                      ("num_workers", 0, "an integer >= 0")):
            value = arguments.get(key, minimum)
            if value is None and key == "eval_batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"data.{key}={value!r} is not allowed: expected {allowed}")
        check_image_size(arguments.get("image_size"), "data.image_size")
        policy_keys = {f.name for f in fields(SplitPolicy)} & set(arguments)
        if policy_keys:
            SplitPolicy(**{key: arguments[key] for key in policy_keys})

    # ------------------------------------------------------------------ subclass API
    def build_index(self) -> DatasetIndex:  # pragma: no cover - abstract
        raise NotImplementedError

    def resolve(self, path: str | None, key: str = "data.root", hint: str = "") -> Path:
        """A configured path made absolute (cwd, then ``base_dir``); missing: DataError naming what was tried."""
        return resolve_path(path, key=key, base_dir=self.base_dir, hint=hint)

    # ------------------------------------------------------------------ setup
    @property
    def class_names(self) -> list[str]:
        if self.index is None:
            self.setup()
        assert self.index is not None
        return self._class_names if self._class_names is not None else self.index.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_policy(self) -> SplitPolicy:
        """The split settings as :func:`~clipft.data.split_policy.make_splits` takes them."""
        return SplitPolicy(
            val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed, dedupe=self.dedupe,
            test_view=self.test_view, on_bad_image=self.on_bad_image, shots=self.shots, shot_seed=self.shot_seed,
            shot_sampler=self.shot_sampler, classes=self.classes,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        index = self.build_index()
        if not index.train_pool:
            raise DataError(f"{type(self).__name__}: the dataset has no training images")
        policy = self.split_policy
        keys = self._image_keys(index) if policy.needs_scan(index.test is not None) else None
        splits = make_splits(index, policy, keys, self._given_shots(index))
        self.train_samples, self.val_samples, self.test_samples = splits.train, splits.val, splits.test
        self.split_report = splits.report
        self._class_names = list(splits.class_names or index.class_names)
        self.held_out, self.few_shot_split = splits.held_out, splits.few_shot
        self.index = index
        self._log_splits(splits.report)
        if self.normalization == "dataset" and (self.mean is None or self.std is None):
            self._dataset_mean_std()

    def _given_shots(self, index: DatasetIndex) -> FewShotSplit | None:
        """``data.fewshot_split_file`` read through the file gate's JSON reader (plain data, never pickle)."""
        if not self.fewshot_split_file:
            return None
        from clipft.utils.file_gate import gate_file_config, read_json_mapping

        path = self.resolve(self.fewshot_split_file, key="data.fewshot_split_file")
        record = gate_file_config(read_json_mapping(path, DataError), str(path), "plain", "fewshot_split")
        return split_from_record(record, str(path), dataset_root(_all_samples(index)))

    def _image_keys(self, index: DatasetIndex) -> dict[str, str | None]:
        """Pixel hash of every image of ``index`` by path (``None``: unreadable, skipped); raises per ``on_bad_image``."""
        fingerprints = self._fingerprints([*index.train_pool, *(index.val or []), *(index.test or [])])
        keys = {path: (f.hash if f.ok else None) for path, f in fingerprints.items()}
        if all(keys[s.path] is None for s in index.train_pool):
            raise DataError(f"{type(self).__name__}: every training image was unreadable and skipped")
        return keys

    def _log_splits(self, report: dict[str, Any]) -> None:
        """What :meth:`setup` found, logged: duplicates, short few-shot classes, leaks, sizes and balance."""
        duplicates, balance = report["duplicates"], report["class_balance"]
        if duplicates["checked"]:
            self._log_duplicates(duplicates)
        short = report.get("few_shot", {}).get("classes_with_fewer_images")
        if short:
            log.warning("data.shots=%d: classes with fewer distinct training images keep all they have: %s",
                        self.shots, short)
        if duplicates["checked"] and duplicates["val_files_with_copy_in_train"]:
            log.warning(
                "%d of %d val images have a pixel copy in train (data.dedupe=%s): val accuracy is optimistic",
                duplicates["val_files_with_copy_in_train"],
                report["val"],
                self.dedupe,
            )
        log.info(
            "%s: %d classes, train %d / val %d / test %d; train class counts %d..%d (imbalance %.1fx), rarest: %s",
            type(self).__name__,
            report["num_classes"],
            report["train"],
            report["val"],
            report["test"],
            balance["min"],
            balance["max"],
            balance["imbalance_ratio"] or 0.0,
            ", ".join(balance["rarest"]),
        )
        if report["unsplittable_classes"]:
            log.warning(
                "classes with too few distinct images to appear in every split (kept in train): %s",
                report["unsplittable_classes"],
            )
        if balance["missing_classes"]:
            log.warning("classes with no training image: %s", balance["missing_classes"])

    def _fingerprints(self, samples: Sequence[Sample]) -> dict:
        name = hashlib.sha1(_common_dir(samples).encode()).hexdigest()[:12]
        index_file = self.cache_dir / f"fingerprints-{type(self).__name__.lower()}-{name}.sqlite"
        canonical = {s.path: canonical_path(s.path) for s in samples}
        found = FingerprintIndex(index_file, self.fingerprint_workers).lookup(canonical.values())
        fingerprints = {path: found[key] for path, key in canonical.items()}  # by each sample's own path
        bad = [(p, f.error) for p, f in fingerprints.items() if not f.ok]
        if bad and self.on_bad_image == "error":
            listing = "; ".join(f"{e}" for _, e in bad[:3])
            raise DataError(
                f"{len(bad)} image file(s) cannot be decoded: {listing}"
                + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
                + ". Replace or delete them, or set data.on_bad_image=skip to leave them out"
            )
        self.skipped_images = [{"path": p, "error": e or ""} for p, e in bad]
        if bad:
            log.warning("skipping %d unreadable image(s) (data.on_bad_image=skip), e.g. %s", len(bad), bad[0][0])
        return fingerprints

    @staticmethod
    def _log_duplicates(report: dict[str, Any]) -> None:
        log.info(
            "duplicates (pixel hash): %d of %d pool files are copies (%d distinct images); data.dedupe=%s -> %d kept",
            report["pool_duplicate_files"],
            report["pool_files"],
            report["pool_distinct"],
            report["mode"],
            report["pool_after"],
        )
        if report.get("label_conflicts"):
            log.warning("%d identical images carry different labels", report["label_conflicts"])
        if report.get("test_overlap_files"):
            log.warning(
                "train/test overlap: %d of %d test files are pixel copies of train/val images; data.test_view=%s -> "
                "%d test files used",
                report["test_overlap_files"],
                report["test_files"],
                report["test_view"],
                report["test_after"],
            )

    def _dataset_mean_std(self) -> None:
        """Seed-style normalisation: mean/std of the train split, cached under cache_dir."""
        paths = sorted(canonical_path(s.path) for s in self.train_samples)
        stats_file = self.cache_dir / f"meanstd-{cache_key(paths, 64)[:16]}.json"
        try:
            stats = json.loads(stats_file.read_text())
        except (OSError, ValueError):
            log.info("computing the dataset mean/std over %d training images", len(paths))
            mean, std = compute_mean_std(paths)
            stats = {"mean": mean, "std": std, "images": len(paths)}
            try:
                atomic_write_json(stats_file, stats)
            except OSError:
                pass
        self.mean = self.mean if self.mean is not None else list(stats["mean"])
        self.std = self.std if self.std is not None else list(stats["std"])
        log.info("dataset normalisation: mean %s std %s", self.mean, self.std)

    # ------------------------------------------------------------------ reports
    def write_reports(self, output_dir: str | os.PathLike) -> None:
        """Write ``data_report.json`` (splits, duplicates, balance) and ``skipped_images.txt`` if any were skipped."""
        output_dir = Path(output_dir)
        atomic_write_json(output_dir / "data_report.json", {**self.split_report, "skipped": self.skipped_images})
        if self.few_shot_split is not None and self.index is not None:  # reused with data.fewshot_split_file=
            root = dataset_root(_all_samples(self.index))
            atomic_write_json(output_dir / "fewshot_split.json", split_record(self.few_shot_split, root))
        if self.skipped_images:
            lines = [f"{item['path']}\t{item['error']}" for item in self.skipped_images]
            atomic_write_text(output_dir / "skipped_images.txt", "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ preprocessing
    def configure_preprocessing(
        self, image_size: int | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        """Fill the preprocessing the config left null (typically from the backbone)."""
        if self.image_size is None and image_size is not None:
            self.image_size = int(image_size)
        if self.normalization == "backbone":
            if self.mean is None and mean is not None:
                self.mean = list(mean)
            if self.std is None and std is not None:
                self.std = list(std)

    @property
    def preprocessing(self) -> dict[str, Any]:
        fallback_mean, fallback_std = (
            (IMAGENET_MEAN, IMAGENET_STD) if self.normalization == "imagenet" else (DEFAULT_MEAN, DEFAULT_STD)
        )
        return {
            "image_size": int(self.image_size or 224),
            "mean": list(self.mean or fallback_mean),
            "std": list(self.std or fallback_std),
        }

    def transform(self, train: bool) -> Callable[[Any], torch.Tensor]:
        pre = self.preprocessing
        if train:
            return build_transform(self.train_transform_name, **pre, **self.transform_options)
        return build_transform(self.eval_transform_name, **pre)

    # ------------------------------------------------------------------ decoded-image cache
    @property
    def stored_size(self) -> int:
        """The cache's resolution: ``cache_size``, else the train preset's resize size."""
        if self.cache_size:
            return self.cache_size
        ratio = float(self.transform_options.get("resize_ratio", 256 / 224))
        return max(int(round(self.preprocessing["image_size"] * ratio)), self.preprocessing["image_size"])

    def decoded_cache(self, samples: Sequence[Sample] | None = None) -> DecodedImageCache:
        """The cache over the split ``samples`` come from (default: every split of the run), built (or validated)
        on first use.

        One array per split, not one per run: a split that many runs share (the test split of every few-shot
        draw and every method) is decoded and stored once, and a draw adds only its own shots. One array per
        run wrote the whole test split again for every draw (GTSRB: 200-590 MB each).
        """
        self.setup()
        pool = self._split_of(samples)
        paths = tuple(sorted({canonical_path(s.path) for s in pool}))
        key = (paths, self.stored_size)
        if key not in self._decoded:
            name = f"{type(self).__name__.lower()}-{hashlib.sha1(_common_dir(pool).encode()).hexdigest()[:12]}"
            self._decoded[key] = DecodedImageCache(paths, self.stored_size, self.cache_dir, name).ensure()
        return self._decoded[key]

    def _split_of(self, samples: Sequence[Sample] | None) -> Sequence[Sample]:
        """The split list holding every one of ``samples`` (a feature bank asks for the rows it lacks: a subset
        of one split, which must not get an array of its own), else every split together."""
        splits = [self.train_samples, self.val_samples, self.test_samples, self.held_out.test if self.held_out else []]
        if any(samples is split for split in splits):  # a loader's own split: no path sets to build
            return samples
        if samples is not None:
            wanted = {canonical_path(s.path) for s in samples}
            for split in splits:
                if wanted <= {canonical_path(s.path) for s in split}:
                    return split
        return [sample for split in splits for sample in split]

    # ------------------------------------------------------------------ datasets / loaders
    def make_dataset(self, samples: Sequence[Sample], train: bool) -> Dataset:
        if self.feature_dataset is not None:  # a feature bank serves the frozen tower's outputs instead
            served = self.feature_dataset(samples, train)
            if served is not None:  # None: this split stays on pixels (training with train_from_bank=false)
                return served
        if self.use_cache:
            transform = None if self.augment_on_device else self.transform(train)
            return CachedImageDataset(samples, self.decoded_cache(samples), transform)
        return ImageDataset(samples, self.transform(train))

    def image_dataset(self, samples: Sequence[Sample], train: bool) -> Dataset:
        """Pixels with the transform applied here, whatever ``augment_on_device`` says: for one-off passes
        over a split (feature extraction, feature banks) that never reach ``on_after_batch_transfer``."""
        if self.use_cache:
            return CachedImageDataset(samples, self.decoded_cache(samples), self.transform(train))
        return ImageDataset(samples, self.transform(train))

    def _loader(self, split: str) -> DataLoader:
        self.setup()  # before reading the split: a loader asked for first still gets samples
        samples, train = getattr(self, f"{split}_samples"), split == "train"
        sampler = self._balanced_sampler(samples) if train and self.balanced_sampler else None
        return DataLoader(
            self.make_dataset(samples, train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=self.drop_last and train,
        )

    def _balanced_sampler(self, samples: Sequence[Sample]) -> WeightedRandomSampler:
        """Each class drawn equally often in expectation: weight 1 / (its count in the train split)."""
        counts = Counter(s.label for s in samples)
        weights = torch.tensor([1.0 / counts[s.label] for s in samples], dtype=torch.double)
        # the global RNG (seeded by seed_everything): a fixed generator would repeat each reloaded epoch
        return WeightedRandomSampler(weights, num_samples=len(samples), replacement=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``augment_on_device``: run the transforms per image on the accelerator."""
        if not self.augment_on_device or batch[0].dim() != 4:  # feature-bank rows are [N, D]: nothing to transform
            return batch
        images, labels = batch[0], batch[1]
        training = self.trainer is not None and self.trainer.training
        transform = self.transform(train=training)
        images = torch.stack([transform(image) for image in images])
        return (images, labels, *batch[2:])

    def held_out_dataloader(self) -> DataLoader:
        """The test split of the classes ``data.classes`` left out (base <-> novel), labelled in their own order."""
        self.setup()
        if self.held_out is None:
            raise ConfigError("no held-out classes: set data.classes=base (or novel) to split the classes")
        return DataLoader(
            self.make_dataset(self.held_out.test, train=False), batch_size=self.eval_batch_size, shuffle=False,
            num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def _all_samples(index: DatasetIndex) -> list[Sample]:
    return [*index.train_pool, *(index.val or []), *(index.test or [])]


def _common_dir(samples: Sequence[Sample]) -> str:
    paths = [os.path.dirname(canonical_path(s.path)) for s in samples]
    return os.path.commonpath(paths) if paths else ""


def wire(datamodule: Any, model: Any) -> Any:
    """Give ``datamodule`` the preprocessing ``model`` expects, before ``Trainer.fit``/``test``.

    The image size, mean and std a config leaves null come from the model (a loaded checkpoint's:
    the ones it was trained with; else its backbone's): ``dm.configure_preprocessing(**model.preprocessing)``.
    train.py and eval.py call it; a plain script needs it too (``clipft.wire(dm, model)``), or the
    datamodule feeds 224 px images to, say, a 336 px model. Returns the datamodule.
    """
    pre = dict((getattr(model, "checkpoint_meta", None) or {}).get("preprocessing") or getattr(model, "preprocessing", None) or {})
    datamodule.configure_preprocessing(**{k: pre[k] for k in ("image_size", "mean", "std") if k in pre})
    return datamodule
