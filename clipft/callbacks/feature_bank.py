"""Feature banks: a frozen image tower's embeddings of a split, computed once and memory-mapped.

Most few-shot methods (CoOp, CoCoOp, KgCoOp, CLIP-Adapter, Tip-Adapter-F, CLAP, TaskRes, LP++, the linear
probe) never change the image tower, yet a plain run pushes every batch of every epoch through it. With
``callbacks=[default,feature_bank]`` the callback computes, once per image, the tower's raw embedding of
the unaugmented view (view 0, the evaluation transform) and, for training images, of ``views`` augmented views
(the training transform, seeded per image and view), stores them beside the data cache and serves them as the
datamodule's datasets: validation reads view 0 (exact), training draws one augmented view per image per
epoch (the reference practice of Tip-Adapter's 10 and CLAP's 20 views; *not* identical to drawing a fresh
augmentation each epoch). Test and predict keep reading pixels.

A bank is one folder per key: the backbone's weights (a hash of every tensor), its class, the
preprocessing, both transforms and the view count; any change selects another folder, so a changed
backbone rebuilds. Rows are stored per image (path, size, mtime), in parts appended as new images are
asked for, so the seeds and shot counts of a sweep share one bank. A folder whose ``key.json`` does not
match its name, or whose arrays do not have the key's shape, is refused with one line. Everything is
numpy ``.npy`` read with ``allow_pickle=False`` and JSON: nothing loaded can run code.

Written here, not taken from a library: none of torchvision, litdata or Lightning stores per-view
embeddings keyed by the model's weights (litdata streams samples, it does not key them by a model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clipft.errors import DataError
from clipft.utils.io import atomic_write_text

log = logging.getLogger(__name__)
FORMAT = 1


def rows_of(module: Any) -> str | None:
    """What a method's bank rows hold: ``embedding`` (the tower's raw output, the default), ``pooled`` (before its
    final projection) or None (the method's backbone cannot give what it reads: no bank)."""
    return getattr(module, "bank_rows", "embedding")


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 of every tensor of ``module`` (names, dtypes, shapes, bytes): equal only for the same weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sample_id(path: str | os.PathLike) -> str:
    """An image's identity in a bank: its real path, size and modification time (an edited file is new)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return f"{real}|{stat.st_size}|{stat.st_mtime_ns}"


def view_seed(identity: str, view: int, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{identity}|{view}|{seed}".encode()).digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF


class FeatureBank:
    """Rows ``[1 + views, dim]`` per image under ``directory`` (a folder named by the key's hash)."""

    def __init__(self, root: str | os.PathLike, key: dict[str, Any]) -> None:
        self.key = {"format": FORMAT, **key}
        self.views = int(key["views"])
        text = json.dumps(self.key, sort_keys=True)
        self.directory = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:20]
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "key.json"
        if not key_file.exists():
            atomic_write_text(key_file, text)
        elif key_file.read_text() != text:
            raise DataError(f"feature bank {str(self.directory)!r} holds another key than its name says (a foreign or "
                            "tampered folder): delete it and the bank is rebuilt")
        self._parts: list[np.ndarray] = []
        self._where: dict[str, tuple[int, int]] = {}
        self._load_parts()

    def _load_parts(self) -> None:
        for index_file in sorted(self.directory.glob("part-*.json")):
            array_file = index_file.with_suffix(".npy")
            if not array_file.exists():
                continue  # an interrupted write: its rows are computed again
            ids = json.loads(index_file.read_text())["ids"]
            array = np.load(array_file, mmap_mode="r", allow_pickle=False)
            if array.ndim != 3 or array.shape[0] != len(ids) or array.shape[1] != 1 + self.views:
                raise DataError(f"feature bank part {str(array_file)!r} has shape {array.shape}, not [{len(ids)}, "
                                f"{1 + self.views}, dim]: delete {str(self.directory)!r} and it is rebuilt")
            part = len(self._parts)
            self._parts.append(array)
            self._where.update({identity: (part, row) for row, identity in enumerate(ids)})

    def missing(self, identities: Sequence[str], views: bool = True) -> list[int]:
        """Positions of the images without rows (``views``: or whose augmented views were never computed)."""
        def lacks(identity: str) -> bool:
            if identity not in self._where:
                return True
            part, row = self._where[identity]
            return views and self.views > 0 and bool(np.isnan(self._parts[part][row, 1, 0]))

        return [i for i, identity in enumerate(identities) if lacks(identity)]

    def add(self, identities: Sequence[str], rows: np.ndarray) -> None:
        """Store new rows as one more part (array first, its index last: a part without an index is ignored)."""
        name = f"part-{len(list(self.directory.glob('part-*.npy'))):05d}-{os.getpid()}"
        tmp = self.directory / f".{name}.npy.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(rows, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, self.directory / f"{name}.npy")
        atomic_write_text(self.directory / f"{name}.json", json.dumps({"ids": list(identities)}))
        part = len(self._parts)
        self._parts.append(np.load(self.directory / f"{name}.npy", mmap_mode="r", allow_pickle=False))
        self._where.update({identity: (part, row) for row, identity in enumerate(identities)})

    def locate(self, identities: Sequence[str]) -> list[tuple[np.ndarray, int]]:
        return [(self._parts[part], row) for part, row in (self._where[i] for i in identities)]


class BankDataset(Dataset):
    """``(embedding, label)`` from a bank: view 0 for evaluation, one of the augmented views for training."""

    def __init__(self, rows: list[tuple[np.ndarray, int]], labels: Sequence[int], train: bool, views: int) -> None:
        self.rows, self.labels, self.train, self.views = rows, list(labels), bool(train), int(views)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        array, row = self.rows[index]
        view = 1 + int(torch.randint(self.views, ())) if self.train and self.views > 0 else 0
        return torch.from_numpy(np.array(array[row, view], dtype=np.float32)), self.labels[index]


class _SeededViews(Dataset):
    """A split's pixels for one view, each image's augmentation drawn from its own seed (reproducible anywhere)."""

    def __init__(self, dataset: Dataset, seeds: Sequence[int]) -> None:
        self.dataset, self.seeds = dataset, list(seeds)

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seeds[index])
            return self.dataset[index]


class FeatureBankCallback(L.Callback):
    """Serve a frozen image tower's embeddings from a :class:`FeatureBank` while fitting.

    Args:
        views: augmented views stored per image (0: train on the unaugmented view).
        train_from_bank: false (the default callbacks' setting: exact) keeps training batches on pixels, a fresh
            augmentation each epoch; validation and one-off feature passes (linear probe, Tip-Adapter, CLAP, LP++)
            still read the bank's unaugmented view. true: training draws one of ``views`` stored views.
        directory: where banks live (default: ``feature_banks/`` beside the datamodule's decoded-image cache).
        seed: the augmentation seed of view v of an image is derived from (image, v, seed).
        batch_size: images per forward pass while building.
        test_from_bank: the test pass (``trainer.test`` with this callback) reads view 0 too, exact as validation:
            every cell of a protocol sweep over one backbone then encodes the test split once, not once per cell
            (Tip-Adapter's reference caches its test features the same way). false: the test reads pixels.
    """

    def __init__(self, views: int = 10, train_from_bank: bool = True, directory: str | None = None, seed: int = 0,
                 batch_size: int = 128, test_from_bank: bool = True) -> None:
        if isinstance(views, bool) or not isinstance(views, int) or views < 0:
            raise DataError(f"feature_bank.views={views!r} is not allowed: expected an integer >= 0")
        self.views, self.train_from_bank, self.seed, self.batch_size = views, bool(train_from_bank), int(seed), int(batch_size)
        self.test_from_bank = bool(test_from_bank)
        self.directory = directory
        self.bank: FeatureBank | None = None
        self.built_images = 0  # images whose rows this process computed (0 on a reused bank)
        self.build_seconds = 0.0
        self._module: Any = None

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before any loader is asked for (Lightning builds the train loader while configuring the optimiser,
        earlier than ``on_fit_start``); the rows themselves are computed when a loader first asks for a split."""
        if stage != "fit" and not (stage == "test" and self.test_from_bank):
            return
        datamodule = trainer.datamodule
        reason = self.off_reason(pl_module, datamodule)
        if reason is not None:
            if stage == "fit":  # said once a run, not again for its test
                log.info("feature bank off: %s", reason)
            return
        self._module = pl_module
        datamodule.feature_dataset = self.dataset
        self.bank = None  # the test's bank is keyed when its loader is asked for: after Lightning restored the weights
        if stage == "fit":
            self.bank = self._open(datamodule)
            log.info("feature bank %s: %d views per image", self.bank.directory, self.views)

    @staticmethod
    def off_reason(pl_module: L.LightningModule, datamodule: Any) -> str | None:
        """Why this module / datamodule pair cannot be served from a bank (None: it can)."""
        name = type(pl_module).__name__
        if not (getattr(type(pl_module), "reads_image_features", False) and getattr(pl_module, "freeze_image_tower", True)) \
                or getattr(pl_module, "needs_training_pixels", False):
            return f"{name} trains (or reads pixels of) its image tower"
        if datamodule is None or not hasattr(datamodule, "feature_dataset"):
            return "it serves a clipft datamodule's splits (fit with datamodule=)"
        if rows_of(pl_module) is None:
            return f"{name} reads the image tower's pooled output, which {type(pl_module.backbone).__name__} does not give"
        return None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._release(trainer)

    def _release(self, trainer: L.Trainer) -> None:
        if trainer.datamodule is not None and getattr(trainer.datamodule, "feature_dataset", None) == self.dataset:
            trainer.datamodule.feature_dataset = None  # other passes (a held-out split, predict, plots) read pixels again

    def _open(self, datamodule: Any) -> FeatureBank:
        return FeatureBank(self._root(datamodule), self.bank_key(self._module, datamodule))

    def _root(self, datamodule: Any) -> Path:
        if self.directory:
            return Path(self.directory).expanduser()
        return Path(getattr(datamodule, "cache_dir", Path.home() / ".cache" / "clipft")) / "feature_banks"

    def bank_key(self, module: Any, datamodule: Any) -> dict[str, Any]:
        backbone = module.backbone
        return {
            "backbone": weights_hash(backbone), "class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
            "preprocessing": {k: v for k, v in datamodule.preprocessing.items()},
            "train_transform": [datamodule.train_transform_name, dict(datamodule.transform_options)],
            "eval_transform": datamodule.eval_transform_name, "views": self.views, "seed": self.seed,
            **({"rows": "pooled"} if rows_of(module) == "pooled" else {}),  # embedding banks keep their old key
        }

    # ------------------------------------------------------------------ serving
    def dataset(self, samples: Sequence[Any], train: bool) -> Dataset | None:
        """The datamodule's dataset of ``samples``: computes the rows it lacks, then reads them memory-mapped
        (None for training batches when ``train_from_bank`` is false: the datamodule serves pixels)."""
        if train and not self.train_from_bank:
            return None
        if self.bank is None:  # the test stage's bank, keyed by the restored weights
            self.bank = self._open(self._module.trainer.datamodule)
        identities = [sample_id(s.path) for s in samples]
        with_views = train and self.train_from_bank and self.views > 0  # evaluation reads view 0 only
        todo = self.bank.missing(identities, views=with_views)
        if todo:
            wanted = [samples[i] for i in todo]
            started = time.perf_counter()
            with torch.random.fork_rng(devices=[]):  # building draws loader seeds: the run's random stream stays as without a bank
                rows = self._compute(wanted, [identities[i] for i in todo], with_views)
            self.bank.add([identities[i] for i in todo], rows)
            self.built_images += len(todo)
            self.build_seconds += time.perf_counter() - started
            log.info("feature bank: %d images x %d views computed in %.1f s (%s)", len(todo), 1 + self.views if with_views else 1,
                     time.perf_counter() - started, self.bank.directory)
        return BankDataset(self.bank.locate(identities), [s.label for s in samples], train=train, views=self.views)

    @torch.no_grad()
    def _compute(self, samples: Sequence[Any], identities: Sequence[str], with_views: bool = True) -> np.ndarray:
        """``[n, 1 + views, dim]`` raw embeddings: view 0 with the evaluation transform, the rest augmented
        (NaN when ``with_views`` is false: an evaluation-only image costs one pass, not ``1 + views``)."""
        module, datamodule = self._module, self._module.trainer.datamodule
        was_training = module.backbone.training
        module.backbone.eval()
        per_view = []
        for view in range(1 + (self.views if with_views else 0)):
            pixels = datamodule.image_dataset(samples, train=view > 0)
            seeded = _SeededViews(pixels, [view_seed(identity, view, self.seed) for identity in identities])
            per_view.append(self._encode(module, seeded))
        module.backbone.train(was_training)
        while len(per_view) < 1 + self.views:
            per_view.append(np.full_like(per_view[0], np.nan))
        return np.stack(per_view, axis=1)

    def _encode(self, module: Any, dataset: Dataset) -> np.ndarray:
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)
        if rows_of(module) == "pooled":
            encode = module.backbone.encode_image_pooled
        else:
            encode = lambda x: module.backbone.encode_image(x, normalize=False)
        out = [encode(batch[0].to(module.device)).float().cpu() for batch in loader]
        return torch.cat(out).numpy()

