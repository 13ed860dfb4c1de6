"""Streaming: a clipft dataset's splits as litdata chunks, read back by ``data=streaming``.

For data that does not fit on local disk, or lives in object storage. :func:`write_stream` takes
any clipft datamodule *after* its setup (so the duplicate-aware split, the clean test view and
the class names are decided once, by the code that decides them for the folder datamodules) and
writes each split with ``litdata.optimize``: one item per image holding the file's original bytes
(decoded on read with the same :func:`load_rgb`, so pixels equal the folder datamodule's), its
label and its duplicate group (the pixel hash). ``clipft_stream.json`` beside the splits records
the class names, the source's ``data_report`` and each split's labels, groups and source paths.

:class:`StreamingDataModule` reads them with litdata's ``StreamingDataset`` and
``StreamingDataLoader`` from a local folder or an ``s3://``-style URI (litdata downloads chunks
on demand into a bounded local cache). litdata shards each epoch across DDP ranks and loader
workers, and its loader is stateful: Lightning keeps its state in the checkpoint, so a run
resumed from a mid-epoch checkpoint continues the epoch where it stopped.

Streams hold only ``int``, ``str`` and flat ``uint8`` array fields: an item declaring any other litdata
format (``pickle`` among them, which would run code on load) is refused when read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from clipft.data.base import DatasetIndex, ImageClassificationDataModule, Sample
from clipft.data.images import load_rgb
from clipft.data.paths import canonical_path
from clipft.errors import ConfigError, DataError
from clipft.utils.io import atomic_write_json
from clipft.utils.size_limits import check_size

log = logging.getLogger(__name__)

META_FILE = "clipft_stream.json"
STREAM_VERSION = 1
SPLITS = ("train", "val", "test")
# what write_stream stores (ints, strings, the encoded file as a flat uint8 array); every other
# litdata format is refused when read
ALLOWED_FORMATS = ("int", "str", "no_header_numpy")


def _require_litdata() -> Any:
    try:
        import litdata
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigError("data=streaming needs litdata: pip install 'clipft[streaming]'") from exc
    return litdata


# ---------------------------------------------------------------------------------------- writing
def _stream_item(row: tuple[int, str, int, str]) -> dict[str, Any]:
    index, path, label, group = row
    import numpy as np

    with open(path, "rb") as fh:
        # the encoded file as a flat uint8 array: litdata would sniff raw bytes as an "image" and decode
        # them its own way; an array round-trips byte for byte and reads back with np.frombuffer
        data = np.frombuffer(fh.read(), dtype=np.uint8)
    # no path field: litdata stores a string naming an existing image file as that image
    return {"index": index, "image": data, "label": label, "group": group}


# litdata.optimize empties its scratch folders when it starts: by default $TMPDIR/chunks and
# $TMPDIR/data, which deletes whatever a user keeps there (clipft's own data_dir is ./data, so a
# run from /tmp lost its images). Each write gets folders of its own unless the user chose them.
OPTIMIZER_SCRATCH = {"DATA_OPTIMIZER_CACHE_FOLDER": "chunks", "DATA_OPTIMIZER_DATA_CACHE_FOLDER": "data"}


@contextlib.contextmanager
def private_optimizer_scratch() -> Any:
    """Point litdata.optimize's scratch folders at a fresh temporary folder, removed afterwards."""
    unset = [key for key in OPTIMIZER_SCRATCH if not os.environ.get(key)]
    scratch = tempfile.mkdtemp(prefix="clipft-litdata-")
    for key in unset:
        os.environ[key] = os.path.join(scratch, OPTIMIZER_SCRATCH[key])
    try:
        yield
    finally:
        for key in unset:
            os.environ.pop(key, None)
        shutil.rmtree(scratch, ignore_errors=True)


def write_stream(
    datamodule: ImageClassificationDataModule,
    output_dir: str | os.PathLike,
    num_workers: int = 1,
    chunk_bytes: str = "64MB",
) -> str:
    """Write ``datamodule``'s train / val / test splits as litdata chunks under ``output_dir``.

    ``output_dir`` is a local folder or an object-store URI litdata can write (``s3://bucket/x``);
    returns it, as the ``data.input_dir`` to read the stream from.
    """
    litdata = _require_litdata()
    datamodule.setup()
    output = str(output_dir).rstrip("/")
    remote = "://" in output
    samples = {split: list(getattr(datamodule, f"{split}_samples")) for split in SPLITS}
    every = [s for split in SPLITS for s in samples[split]]
    groups = datamodule._fingerprints(every)  # the setup's own index: hits, nothing decoded again
    meta: dict[str, Any] = {
        "version": STREAM_VERSION,
        "class_names": list(datamodule.class_names),
        "source": type(datamodule).__name__,
        "data_report": datamodule.split_report,
        "splits": {},
    }
    for split in SPLITS:
        rows = [(i, canonical_path(s.path), int(s.label), groups[s.path].hash or "")
                for i, s in enumerate(samples[split])]
        if not rows:
            continue
        with private_optimizer_scratch():
            litdata.optimize(
                fn=_stream_item,
                inputs=rows,
                output_dir=f"{output}/{split}",
                chunk_bytes=chunk_bytes,
                num_workers=max(1, int(num_workers)),
                mode="overwrite",
                reorder_files=False,
                verbose=False,
                # fork on Linux: spawn re-imports torch in every worker, seconds per split for small sets
                start_method="fork" if sys.platform.startswith("linux") else None,
            )
        meta["splits"][split] = {
            "count": len(rows),
            "labels": [r[2] for r in rows],
            "paths": [r[1] for r in rows],
            "groups": [r[3] for r in rows],
        }
    if remote:
        _write_remote_json(f"{output}/{META_FILE}", meta)
    else:
        atomic_write_json(Path(output) / META_FILE, meta)
    log.info("wrote a litdata stream of %d images (%s) to %s", len(every), ", ".join(meta["splits"]), output)
    return output


def _write_remote_json(url: str, obj: Any) -> None:
    import fsspec

    with fsspec.open(url, "w") as fh:
        json.dump(obj, fh)


def read_stream_meta(input_dir: str) -> dict[str, Any]:
    """``clipft_stream.json`` of a stream (local path or fsspec URI); errors say what to run."""
    location = f"{input_dir.rstrip('/')}/{META_FILE}"
    try:
        if "://" in input_dir:
            import fsspec

            with fsspec.open(location, "r") as fh:
                meta = json.load(fh)
        else:
            meta = json.loads(Path(location).read_text())
    except FileNotFoundError:
        raise DataError(
            f"{location!r} does not exist: data.input_dir must be a stream written by "
            "`python -m clipft.stream_data OUT data=...` (see docs/data.md)"
        ) from None
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read the stream description {location!r} ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version") != STREAM_VERSION:
        raise DataError(f"{location!r} is not a clipft stream of version {STREAM_VERSION}; write it again")
    names, splits = meta.get("class_names"), meta.get("splits")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not isinstance(splits, dict):
        raise DataError(f"{location!r} lacks a list of class_names (strings) or a mapping of splits; write the stream again")
    if any(not isinstance(v, dict) or not isinstance(v.get("labels", []), list) for v in splits.values()):
        raise DataError(f"{location!r}: every split must be a mapping with a list of labels; write the stream again")
    check_size("num_classes", len(names), "class_names (count)", location)
    return meta


# ---------------------------------------------------------------------------------------- reading
class _RefusedFormat:
    """Stands in for every litdata serializer clipft does not write (``pickle`` would run code)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def setup(self, metadata: Any) -> None:
        pass

    def can_serialize(self, data: Any) -> bool:
        return False

    def serialize(self, data: Any) -> tuple[bytes, str | None]:  # pragma: no cover - never chosen
        raise DataError(f"clipft streams never store {self.name!r} fields")

    def deserialize(self, data: bytes) -> Any:
        raise DataError(
            f"this stream has a field in litdata's {self.name!r} format; clipft streams hold only "
            f"{list(ALLOWED_FORMATS)} fields and refuse others ('pickle' would run code on load). "
            "Write the stream with `python -m clipft.stream_data`"
        )


def safe_serializers() -> dict[str, Any]:
    from litdata.streaming.serializers import _SERIALIZERS

    return {name: _RefusedFormat(name) for name in _SERIALIZERS if name not in ALLOWED_FORMATS}


def _decode_item(item: dict[str, Any], transform: Callable | None, num_classes: int | None = None) -> tuple[Any, int]:
    label = int(item["label"])
    if num_classes is not None and not 0 <= label < num_classes:  # an IndexError mid-training / a device assert on GPU
        raise DataError(
            f"stream item {int(item['index'])} has label {label}, outside the {num_classes} classes of its "
            f"{META_FILE}; the stream is inconsistent: write it again with python -m clipft.stream_data"
        )
    image = load_rgb(f"stream item {int(item['index'])}", data=item["image"].tobytes())
    return (transform(image) if transform is not None else image), label


try:
    from litdata import StreamingDataset as _StreamingDataset
except ImportError:  # pragma: no cover - the streaming extra is not installed
    _StreamingDataset = None

if _StreamingDataset is not None:

    class ImageStream(_StreamingDataset):
        """litdata's dataset whose items are ``(image, label)``, decoded and transformed."""

        image_transform: Callable | None = None
        num_classes: int | None = None

        def __getitem__(self, index: Any) -> Any:
            return _decode_item(super().__getitem__(index), self.image_transform, self.num_classes)


def streaming_dataset(
    input_dir: str, cache_dir: str | None, transform: Callable | None, num_classes: int | None = None, **kwargs: Any
) -> Any:
    """A litdata ``StreamingDataset`` over one split whose items are ``(image, label)`` (labels checked
    against ``num_classes``)."""
    _require_litdata()
    dataset = ImageStream(input_dir, cache_dir=cache_dir, serializers=safe_serializers(), **kwargs)
    dataset.image_transform = transform
    dataset.num_classes = num_classes
    return dataset


def verify_stream_split(location: str, split: str, count: int, num_classes: int, labels: Sequence[Any]) -> None:
    """A split's chunks against its description, before any is read: litdata would wait forever on a
    truncated chunk (``ChunkWaitTimeoutError``) and a label past the classes fails mid-training."""
    bad = next((x for x in labels if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < num_classes), None)
    if bad is not None or len(labels) != count:
        raise DataError(
            f"{location}/{META_FILE}: split {split!r} lists label {bad!r} for {num_classes} classes or "
            f"{len(labels)} labels for {count} items; write the stream again"
        )
    if "://" in location:
        return  # remote chunks are checked by litdata as they download
    index_file = Path(location) / split / "index.json"
    try:
        index = json.loads(index_file.read_text())
        chunks = list(index["chunks"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{str(index_file)!r} cannot be read ({exc}); write the stream again") from None
    items = sum(int(c.get("chunk_size", 0)) for c in chunks)
    if items != count:
        raise DataError(f"{str(index_file)!r} lists {items} items, its {META_FILE} {count}; write the stream again")
    for chunk in chunks:
        file = Path(location) / split / str(chunk.get("filename"))
        size = file.stat().st_size if file.is_file() else None
        if size != chunk.get("chunk_bytes"):
            raise DataError(
                f"stream chunk {str(file)!r} is {'missing' if size is None else f'{size} bytes'}, its index says "
                f"{chunk.get('chunk_bytes')} bytes (truncated or replaced); write the stream again"
            )


@dataclass(frozen=True)
class StreamSample(Sample):
    """A streamed image: its split and its position there (``path`` is the source file, for reports)."""

    split: str = "train"
    index: int = 0


class StreamedSamples(Dataset):
    """Random access to some items of one split (modules that build their own loaders, e.g. feature caches)."""

    def __init__(self, stream: Any, indices: Sequence[int]) -> None:
        self.stream = stream
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.stream[self.indices[i]]


class StreamingDataModule(ImageClassificationDataModule):
    """Train / val / test streamed from a clipft litdata stream (``data=streaming``).

    Args:
        input_dir: the stream's folder or URI (``s3://bucket/signs``), as written by
            ``python -m clipft.stream_data``.
        stream_cache_dir: where litdata keeps downloaded chunks of a remote stream (``null``: its default).
        max_cache_size: bound of that chunk cache (litdata's ``max_cache_size``, e.g. ``"50GB"``).
        shuffle: shuffle the training stream each epoch (chunk-wise and within chunks, litdata's scheme).
        **kwargs: the loader / preprocessing settings every clipft datamodule takes. The split, dedupe,
            cache and few-shot settings belong to the datamodule the stream was written from.
    """

    def __init__(
        self,
        input_dir: str,
        stream_cache_dir: str | None = None,
        max_cache_size: str = "50GB",
        shuffle: bool = True,
        **kwargs: Any,
    ) -> None:
        if not input_dir:
            raise ConfigError("data.input_dir is required for data=streaming: a folder or URI written by clipft.stream_data")
        if kwargs.get("cache"):
            raise ConfigError("data.cache=true does not apply to data=streaming (litdata keeps its own chunk cache)")
        if kwargs.get("shots") is not None:
            raise ConfigError("data.shots does not apply to data=streaming: write the k-shot split as its own stream "
                              "(python -m clipft.stream_data OUT data=... data.shots=K)")
        if kwargs.get("classes", "all") != "all" or kwargs.get("fewshot_split_file"):
            raise ConfigError("data.classes / data.fewshot_split_file do not apply to data=streaming: set them on the "
                              "datamodule the stream is written from (python -m clipft.stream_data OUT data=... data.classes=base)")
        super().__init__(**{**kwargs, "dedupe": "none", "test_view": "all"})
        self.input_dir = str(input_dir).rstrip("/")
        self.stream_cache_dir = stream_cache_dir
        self.max_cache_size = max_cache_size
        self.shuffle = bool(shuffle)
        self._streams: dict[tuple[str, bool], Any] = {}

    @property
    def location(self) -> str:
        """The stream's URI as given, or its local folder made absolute (cwd, then ``base_dir``)."""
        if "://" in self.input_dir:
            return self.input_dir
        return str(self.resolve(self.input_dir, key="data.input_dir"))

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        meta = read_stream_meta(self.location)
        names = list(meta["class_names"])
        for split in SPLITS:
            info = meta["splits"].get(split, {"labels": [], "paths": []})
            if info["labels"]:
                verify_stream_split(self.location, split, int(info.get("count", len(info["labels"]))), len(names), info["labels"])
            samples = [StreamSample(path, int(label), split, i)
                       for i, (path, label) in enumerate(zip(info["paths"], info["labels"], strict=True))]
            setattr(self, f"{split}_samples", samples)
        if not self.train_samples:
            raise DataError(f"the stream {self.input_dir!r} has no training split")
        self.index = DatasetIndex(names, self.train_samples, test=self.test_samples, val=self.val_samples)
        self.split_report = {**meta.get("data_report", {}), "stream": {"input_dir": self.input_dir, "source": meta.get("source")}}
        log.info("streaming %s: %d classes, train %d / val %d / test %d",
                 self.input_dir, len(names), len(self.train_samples), len(self.val_samples), len(self.test_samples))

    def _stream(self, split: str, train: bool) -> Any:
        key = (split, train)
        if key not in self._streams:
            self._streams[key] = streaming_dataset(
                f"{self.location}/{split}",
                self.stream_cache_dir,
                self.transform(train),
                num_classes=len(self.class_names),
                shuffle=train and self.shuffle,
                drop_last=self.drop_last and train,
                seed=self.seed,
                max_cache_size=self.max_cache_size,
            )
        return self._streams[key]

    def make_dataset(self, samples: Sequence[Sample], train: bool) -> Dataset:
        splits = {getattr(s, "split", None) for s in samples}
        if len(splits) != 1 or None in splits:
            raise DataError("a streamed dataset is built from the samples of one split of the stream")
        (split,) = splits
        return StreamedSamples(self._stream(split, train), [s.index for s in samples])

    def _loader(self, split: str) -> Any:
        litdata = _require_litdata()
        self.setup()
        train = split == "train"
        if not getattr(self, f"{split}_samples"):
            return []
        return litdata.StreamingDataLoader(
            self._stream(split, train),
            batch_size=self.batch_size if train else self.eval_batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )
