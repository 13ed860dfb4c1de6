"""Decoded-image cache vs PNG decoding: time to read one epoch of the 58-class traffic-sign set.

    python benchmarks/data_cache.py --root ../shared/data/traffic_sign_58 [--size 256] [--json out.json]

Three timings per path (PNG decode vs cache), each over every image of train + val + test:

* ``read``: the image as a CHW uint8 tensor at the stored resolution, i.e. exactly the work the
  cache replaces (PNG: decode + resize + centre-crop; cache: one memory-mapped row);
* ``eval epoch`` / ``train epoch``: a full DataLoader pass (num_workers=0) with the
  ``clip_eval`` / ``sign_train`` transforms at ``--image-size``: what a training epoch costs.

The target (issue 3) is ``read`` at least 5x faster from the cache. Also reports setup time
(fingerprint index cold and warm) and the one-off cache build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from clipft.data import TrafficSignsDataModule
from clipft.data.cache import resize_square
from clipft.data.images import load_rgb


class Figures(dict):
    """A dict that prints each figure as it is measured (a long run shows progress)."""

    def __setitem__(self, key: str, value: object) -> None:
        super().__setitem__(key, value)
        print(f"{key}: {value}", flush=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def drain(loader: DataLoader) -> None:
    for _ in loader:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/traffic_sign_58")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--size", type=int, default=None, help="cache resolution (default: 256 for 224)")
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each timing")
    parser.add_argument("--skip-epochs", action="store_true", help="only the read timing")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cache_dir = Path(args.cache_dir or tempfile.mkdtemp(prefix="clipft-cache-bench-"))
    results = Figures({"root": str(Path(args.root).resolve()), "threads": 1})

    def make(cache: bool) -> TrafficSignsDataModule:
        dm = TrafficSignsDataModule(
            root=args.root, cache=cache, cache_dir=str(cache_dir), cache_size=args.size,
            image_size=args.image_size, batch_size=64, num_workers=0,
        )
        return dm

    dm = make(cache=True)
    results["setup_cold_s"] = round(timed(dm.setup), 2)
    results["setup_warm_s"] = round(timed(make(cache=True).setup), 2)
    results["cache_build_s"] = round(timed(dm.decoded_cache), 2)
    cache = dm.decoded_cache()
    paths = cache.paths
    results["images"] = len(paths)
    results["cache_size_px"] = cache.size
    results["cache_file_mb"] = round(cache.array_file.stat().st_size / 2**20, 1)

    def read_png() -> None:
        for p in paths:
            torch.from_numpy(resize_square(load_rgb(p), cache.size))

    def read_cache() -> None:
        for p in paths:
            cache.image(p)

    results["read_png_s"] = round(min(timed(read_png) for _ in range(args.repeats)), 3)
    results["read_cache_s"] = round(min(timed(read_cache) for _ in range(args.repeats)), 3)
    results["read_speedup"] = round(results["read_png_s"] / results["read_cache_s"], 1)

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if not args.skip_epochs:
        samples = [*dm.train_samples, *dm.val_samples, *dm.test_samples]
        png_dm = make(cache=False)
        png_dm.setup()
        for train, name in ((False, "eval"), (True, "train")):
            png = DataLoader(png_dm.make_dataset(samples, train), batch_size=64)
            cached = DataLoader(dm.make_dataset(samples, train), batch_size=64)
            results[f"{name}_epoch_png_s"] = round(min(timed(lambda: drain(png)) for _ in range(args.repeats)), 2)
            results[f"{name}_epoch_cache_s"] = round(min(timed(lambda: drain(cached)) for _ in range(args.repeats)), 2)
            results[f"{name}_epoch_speedup"] = round(results[f"{name}_epoch_png_s"] / results[f"{name}_epoch_cache_s"], 1)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"decoded-image cache, {results['images']} images, 1 thread")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, str(value))
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if not args.cache_dir:
        shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
