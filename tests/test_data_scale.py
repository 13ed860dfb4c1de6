"""Data setup at scale: parallel fingerprints equal serial ones, byte copies decoded once, one writer
of the SQLite index (file lock; rank 0 under DDP), and a cache that refuses to overfill the disk."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from dataclasses import fields

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from data_trees import write_png

import clipft.data.cache as cache_module
import clipft.data.fingerprints as fingerprints_module
from clipft.data import DecodedImageCache, FolderDataModule
from clipft.data.fingerprints import _COLUMNS, Fingerprint, FingerprintIndex
from clipft.errors import DataError


def image_tree(root, n, copies_every=0, size=8):
    """``n`` distinct tiny PNGs in 4 class folders, plus a byte copy of every ``copies_every``-th one."""
    paths = []
    for i in range(n):
        path = write_png(root / f"c{i % 4}" / f"{i:05d}.png", seed=i, size=size)
        paths.append(str(path))
        if copies_every and i % copies_every == 0:
            copy = path.with_name(f"{i:05d}_copy.png")
            shutil.copy(path, copy)
            paths.append(str(copy))
    return paths


def test_index_columns_follow_the_fingerprint_fields():
    assert tuple(f.name for f in fields(Fingerprint)) == _COLUMNS


def test_parallel_fingerprints_equal_serial_and_persist_in_sqlite(tmp_path):
    paths = image_tree(tmp_path / "img", 300, copies_every=10)
    serial = FingerprintIndex(None, workers=1).lookup(paths, progress=False)
    index_file = tmp_path / "fp.sqlite"
    parallel_index = FingerprintIndex(index_file, workers=2)
    parallel = parallel_index.lookup(paths, progress=False)
    assert parallel == serial
    assert parallel_index.decoded == 300, "the 30 byte copies reuse their original's decode"
    rows = sqlite3.connect(index_file).execute("SELECT count(*), count(DISTINCT hash) FROM fingerprints").fetchone()
    assert rows == (330, 300)
    again = FingerprintIndex(index_file, workers=2)
    assert again.lookup(paths, progress=False) == serial and again.decoded == 0


def test_byte_copies_are_decoded_once_and_reencoded_copies_still_match(tmp_path, monkeypatch):
    from PIL import Image

    a = write_png(tmp_path / "a.png", seed=1)
    shutil.copy(a, tmp_path / "a_copy.png")
    Image.open(a).save(tmp_path / "a.bmp")  # same pixels, other bytes: must still be found by decoding
    decoded = []
    real = fingerprints_module.decode_pixels
    monkeypatch.setattr(fingerprints_module, "decode_pixels", lambda p: decoded.append(p) or real(p))
    prints = FingerprintIndex(None, workers=1).lookup([a, tmp_path / "a_copy.png", tmp_path / "a.bmp"])
    assert len(decoded) == 2
    assert len({fp.hash for fp in prints.values()}) == 1
    assert len({fp.file_hash for fp in prints.values()}) == 2


def test_a_corrupt_index_file_costs_speed_not_correctness(tmp_path):
    paths = image_tree(tmp_path / "img", 4)
    index_file = tmp_path / "fp.sqlite"
    index_file.write_bytes(b"this is not a database" * 100)
    prints = FingerprintIndex(index_file, workers=1).lookup(paths, progress=False)
    assert all(fp.ok for fp in prints.values()) and len(prints) == 4


def _lookup_in_child(index_file, paths, queue):
    index = FingerprintIndex(index_file, workers=1)
    index.lookup(paths, progress=False)
    queue.put(index.decoded)


def test_two_processes_sharing_an_index_decode_each_file_once(tmp_path):
    """What torchrun ranks (no process group yet) or two sweep jobs sharing a cache dir do."""
    paths = image_tree(tmp_path / "img", 120)
    index_file = str(tmp_path / "fp.sqlite")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_lookup_in_child, args=(index_file, paths, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(queue.get(timeout=5) for _ in procs) == [0, 120], "the second waits on the lock, then hits"


def _ddp_worker(rank, init_file, index_file, paths, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        index = FingerprintIndex(index_file, workers=1)
        writes = []
        real_store = index._store
        index._store = lambda db, new: (db is not None and writes.append(len(new))) or real_store(db, new)
        prints = index.lookup(paths, progress=False)
        (out_dir / f"rank{rank}.txt").write_text(f"{index.decoded} {writes} {sorted(fp.hash for fp in prints.values())}")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_split_the_decoding_and_rank0_alone_writes(tmp_path):
    paths = image_tree(tmp_path / "img", 40)
    index_file = str(tmp_path / "fp.sqlite")
    mp.start_processes(_ddp_worker, args=(str(tmp_path / "rdv"), index_file, paths, tmp_path), nprocs=2, join=True,
                       start_method="spawn")
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text().split(" ", 2) for r in (0, 1))
    assert rank0[0] == rank1[0] == "20", "each rank decodes half"
    assert rank0[1] == "[40]" and rank1[1] == "[]", "rank 0 writes every row, rank 1 nothing"
    assert rank0[2] == rank1[2], "both ranks end with every fingerprint"
    serial = FingerprintIndex(None, workers=1).lookup(paths, progress=False)
    assert FingerprintIndex(index_file, workers=1).lookup(paths, progress=False) == serial


@pytest.mark.slow
def test_ten_thousand_image_setup_parallel_equals_serial(tmp_path):
    image_tree(tmp_path / "img", 10_000, copies_every=5, size=6)
    reports = []
    for workers in (1, 2):
        dm = FolderDataModule(root=str(tmp_path / "img"), cache_dir=str(tmp_path / f"cache{workers}"),
                              fingerprint_workers=workers, dedupe="group")
        dm.setup()
        reports.append((dm.split_report, [s.path for s in dm.train_samples], [s.path for s in dm.val_samples]))
    assert reports[0] == reports[1]
    assert reports[0][0]["duplicates"]["pool_duplicate_files"] == 2_000


def test_fingerprint_workers_is_checked():
    with pytest.raises(Exception, match="fingerprint_workers"):
        FolderDataModule(root="x", fingerprint_workers=0)


def test_cache_that_would_not_fit_is_refused_before_writing(tmp_path, monkeypatch):
    paths = image_tree(tmp_path / "img", 3)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda p: usage._replace(free=500_000_000))
    cache = DecodedImageCache(paths * 20_000, 64, tmp_path / "cache", "t")  # 60,000 rows x 12 KB = 737 MB
    with pytest.raises(DataError, match=r"0\.74 GB .*data\.cache=false .*data=streaming"):
        cache.ensure()
    assert not (tmp_path / "cache").exists(), "nothing was written"
    assert cache_module.cache_bytes(60_000, 64) == 737_280_000
