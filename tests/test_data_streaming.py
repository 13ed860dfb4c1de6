"""data=streaming (litdata): the same pixels and metrics as the folder datamodule it was written
from, shards across 2 gloo ranks, resumes mid-epoch from a Lightning checkpoint, refuses streams
whose items could run code, and trains through train.py."""

from __future__ import annotations

import json
import subprocess
import sys

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import run_script
from data_trees import make_traffic_signs

pytest.importorskip("litdata")

import clipft.data.streaming as streaming_module  # noqa: E402
from clipft.data import TrafficSignsDataModule  # noqa: E402
from clipft.data.streaming import StreamingDataModule, read_stream_meta, write_stream  # noqa: E402
from clipft.errors import DataError  # noqa: E402

SIZE = 8


@pytest.fixture(scope="module")
def source_and_stream(tmp_path_factory):
    root = tmp_path_factory.mktemp("signs")
    make_traffic_signs(root / "ts", per_class=(6, 6, 6, 3))
    source = TrafficSignsDataModule(root=str(root / "ts"), cache_dir=str(root / "cache"), image_size=SIZE,
                                    batch_size=4, transform_options={"rotation": 0})
    source.setup()
    stream = write_stream(source, root / "stream")
    return source, stream


def streamed(stream, **kwargs):
    return StreamingDataModule(input_dir=str(stream), image_size=SIZE, batch_size=4, num_workers=0, **kwargs)


class PixelMean(L.LightningModule):
    """A fixed linear classifier on mean colours: deterministic metrics to compare loaders by."""

    def __init__(self, num_classes):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(3, num_classes)
        self.seen = []

    def forward(self, x):
        return self.head(x.float().mean(dim=(2, 3)))

    def training_step(self, batch, _):
        images, labels = batch
        self.seen.append((labels.tolist(), round(float(images.float().sum()), 3)))
        return torch.nn.functional.cross_entropy(self(images), labels)

    def test_step(self, batch, _):
        images, labels = batch
        logits = self(images)
        self.log("test/loss", torch.nn.functional.cross_entropy(logits, labels, reduction="sum"), reduce_fx="sum")
        self.log("test/correct", (logits.argmax(1) == labels).float().sum(), reduce_fx="sum")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path, **kwargs):
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, **kwargs)


def test_stream_keeps_the_split_labels_groups_and_pixels(source_and_stream):
    source, stream = source_and_stream
    meta = read_stream_meta(str(stream))
    assert meta["class_names"] == source.class_names
    assert meta["splits"]["test"]["labels"] == [s.label for s in source.test_samples]
    groups = meta["splits"]["train"]["groups"]
    assert 2 * len(set(groups)) == len(groups) == len(source.train_samples), "each photo and its copy: one group"
    dm = streamed(stream)
    dm.setup()
    assert [s.label for s in dm.val_samples] == [s.label for s in source.val_samples]
    assert dm.split_report["duplicates"] == source.split_report["duplicates"]
    for split in ("val", "test"):
        folder = source.make_dataset(getattr(source, f"{split}_samples"), train=False)
        stream_items = dm.make_dataset(getattr(dm, f"{split}_samples"), train=False)
        assert len(folder) == len(stream_items)
        for i in range(len(folder)):
            assert torch.equal(folder[i][0], stream_items[i][0]) and folder[i][1] == stream_items[i][1]


def test_test_metrics_equal_the_folder_datamodules(source_and_stream, tmp_path):
    source, stream = source_and_stream
    results = [trainer(tmp_path).test(PixelMean(source.num_classes), datamodule=dm, verbose=False)[0]
               for dm in (source, streamed(stream))]
    assert results[0] == pytest.approx(results[1]) and results[0]["test/correct"] >= 0


def test_training_resumes_mid_epoch_where_it_stopped(source_and_stream, tmp_path):
    _, stream = source_and_stream
    # deterministic training transform: the batches' pixel sums then name the images they hold
    streamed_ = lambda: streamed(stream, train_transform="clip_eval")
    full = PixelMean(4)
    trainer(tmp_path / "a", max_steps=4, enable_checkpointing=False).fit(full, datamodule=streamed_())
    assert len(full.seen) == 4

    first = PixelMean(4)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=2, save_top_k=-1)
    trainer(tmp_path / "b", max_steps=2, callbacks=[checkpoint]).fit(first, datamodule=streamed_())
    saved = torch.load(checkpoint.best_model_path or checkpoint.last_model_path, weights_only=True)
    loader_state = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["dataset"]["num_samples_yielded"] == 8, "the loader's position is in the checkpoint"
    resumed = PixelMean(4)
    trainer(tmp_path / "b", max_steps=4).fit(resumed, datamodule=streamed_(),
                                             ckpt_path=checkpoint.best_model_path or checkpoint.last_model_path)
    assert first.seen == full.seen[:2]
    assert resumed.seen == full.seen[2:], "the resumed run continues the epoch with the batches it had not seen"


def _rank_worker(rank, init_file, stream, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        streaming_module._decode_item = lambda item, transform, num_classes=None: (int(item["index"]), int(item["label"]))
        dm = StreamingDataModule(input_dir=str(stream), image_size=SIZE, batch_size=2, num_workers=0)
        seen = [int(i) for indices, _ in dm.train_dataloader() for i in indices]
        (out_dir / f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_read_disjoint_shards_covering_the_split(source_and_stream, tmp_path):
    source, stream = source_and_stream
    mp.start_processes(_rank_worker, args=(str(tmp_path / "rdv"), stream, tmp_path), nprocs=2, join=True,
                       start_method="spawn")
    shards = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert shards[0] and shards[1]
    assert not set(shards[0]) & set(shards[1]), "no image is read by both ranks"
    assert set(shards[0]) | set(shards[1]) == set(range(len(source.train_samples)))


class Opaque:  # stored by litdata with its pickle serializer
    pass


def _pickled_item(i):
    return {"index": i, "label": 0, "payload": Opaque()}


def test_a_stream_with_pickled_items_is_refused(tmp_path):
    import litdata

    litdata.optimize(fn=_pickled_item, inputs=[0, 1], output_dir=str(tmp_path / "bad" / "train"), chunk_bytes="1MB",
                     num_workers=1, verbose=False, start_method="fork")
    fmt = json.loads((tmp_path / "bad" / "train" / "index.json").read_text())["config"]["data_format"]
    assert "pickle" in fmt
    meta = {"version": 1, "class_names": ["a"], "splits": {"train": {"labels": [0, 0], "paths": ["x", "y"]}}}
    (tmp_path / "bad" / "clipft_stream.json").write_text(json.dumps(meta))
    dm = StreamingDataModule(input_dir=str(tmp_path / "bad"), image_size=SIZE, batch_size=2, num_workers=0)
    with pytest.raises(DataError, match="'pickle' format"):
        next(iter(dm.train_dataloader()))


def test_writing_a_stream_leaves_the_users_temp_folders_alone(source_and_stream, tmp_path, monkeypatch):
    """litdata.optimize empties $TMPDIR/data and $TMPDIR/chunks when it starts; a user's files there survive."""
    import tempfile

    source, _ = source_and_stream
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    for name in ("data", "chunks"):
        (tmp_path / "tmp" / name).mkdir(parents=True)
        (tmp_path / "tmp" / name / "precious.png").write_bytes(b"keep me")
    write_stream(source, tmp_path / "stream")
    assert (tmp_path / "tmp" / "data" / "precious.png").read_bytes() == b"keep me"
    assert (tmp_path / "tmp" / "chunks" / "precious.png").read_bytes() == b"keep me"
    assert read_stream_meta(str(tmp_path / "stream"))["class_names"] == source.class_names


def test_missing_stream_and_misplaced_settings_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="clipft.stream_data"):
        StreamingDataModule(input_dir=str(tmp_path), image_size=SIZE).setup()
    with pytest.raises(Exception, match="data.shots"):
        StreamingDataModule(input_dir=str(tmp_path), shots=4)


def test_train_py_trains_from_a_stream(tmp_path):
    write = [sys.executable, "-m", "clipft.stream_data", str(tmp_path / "s"), "data.num_classes=3",
             "data.train_per_class=6", "data.test_per_class=2"]
    result = subprocess.run(write, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_script("train.py", ["data=streaming", f"data.input_dir={tmp_path / 's'}", "trainer.max_epochs=1",
                                     "trainer.accelerator=cpu", "~callbacks.rich_progress_bar", "data.num_workers=0",
                                     f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == metrics["data"]["test"] == 6
    assert metrics["data"]["stream"]["input_dir"] == str(tmp_path / "s")
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
