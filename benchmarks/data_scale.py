"""Data setup and loading at 10^3 .. 10^5 images: what ``data.dedupe`` costs and how it grows.

    python benchmarks/data_scale.py [--sizes 1000,10000,100000] [--workers 1,2] [--json out.json]

For each N, a synthetic class-folder dataset (64x64 JPEGs, 20 classes, one byte copy of every
10th image, as real sets hold copies) is generated once under ``--cache-dir`` and reused. Each
measurement runs in a fresh interpreter (``--child``) so peak RSS is that setup's alone:

* ``first setup``: ``FolderDataModule(dedupe=group).setup()`` with an empty fingerprint index,
  for each ``--workers`` value (the speed-up of the process pool);
* ``second setup``: the same again on the index the first one wrote;
* peak RSS of the setup process, and how much of it setup added above the imports (torch and
  lightning alone hold about 800 MB here); pool workers are forked and share those pages;
* loader throughput (img/s of one pass of the train loader, 32 px, ``num_workers=1``) for the
  folder datamodule, the decoded-image cache and the litdata stream, on the ``--loader-size`` set.

Then the growth exponent b of ``time = a * N^b`` (least squares over the sizes) for both setups.
Targets (issue 18, this 2-core machine): b close to 1, second setup of 10^5 <= 10 s, first setup
>= 1.8x faster on 2 workers than on 1, setup peak RSS <= 1 GB at 10^5.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CLASSES = 20
IMAGE_PX = 64


def generate(root: Path, n: int) -> Path:
    """``n`` distinct JPEGs (smooth colour fields + noise) in CLASSES folders, plus byte copies of every 10th."""
    done = root / ".complete"
    if done.is_file():
        return root
    import numpy as np
    from PIL import Image

    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, IMAGE_PX)[None, :, None]
    for i in range(n):
        folder = root / f"class{i % CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.uniform(0, 255, (1, 1, 3))
        pixels = colour * ramp + rng.normal(0, 12, (IMAGE_PX, IMAGE_PX, 3))
        path = folder / f"{i:07d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(path, quality=90)
        if i % 10 == 0:
            shutil.copy(path, folder / f"{i:07d}_copy.jpg")
    done.write_text(str(n))
    return root


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    from clipft.data import FolderDataModule

    out: dict = {}
    dm = FolderDataModule(root=args.root, cache_dir=args.index_dir, fingerprint_workers=args.child_workers,
                          dedupe="group", image_size=32, batch_size=256, num_workers=1,
                          cache=args.child_loader == "cache")
    out["rss_imports_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch + lightning: the floor
    start = time.perf_counter()
    dm.setup()
    out["setup_s"] = time.perf_counter() - start
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["files"] = dm.split_report["duplicates"]["pool_files"]
    if args.child_loader:
        dm.configure_preprocessing(32)
        if args.child_loader == "streaming":
            from clipft.data.streaming import StreamingDataModule, write_stream

            stream = Path(args.index_dir) / "stream"
            if not (stream / "clipft_stream.json").is_file():
                write_stream(dm, stream, num_workers=2)
            dm = StreamingDataModule(input_dir=str(stream), image_size=32, batch_size=256, num_workers=1)
        elif args.child_loader == "cache":
            dm.decoded_cache(dm.train_samples)  # built outside the timed pass (the loader reads this array)
        loader = dm.train_dataloader()
        next(iter(loader))  # worker start-up and first chunk outside the timing
        start, images = time.perf_counter(), 0
        for batch, _ in loader:
            images += len(batch)
        out["loader_img_s"] = images / (time.perf_counter() - start)
    print("CHILD " + json.dumps(out), flush=True)


def run_child(root: Path, index_dir: Path, workers: int, loader: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", "--root", str(root), "--index-dir", str(index_dir),
           "--child-workers", str(workers), "--child-loader", loader]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("CHILD ")]
    if result.returncode or not lines:
        raise SystemExit(f"measurement failed: {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def exponent(sizes: list[int], seconds: list[float]) -> float:
    xs, ys = [math.log(n) for n in sizes], [math.log(max(s, 1e-6)) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--workers", default="1,2", help="fingerprint_workers values for the first setup")
    parser.add_argument("--loader-size", type=int, default=10000, help="the N whose loaders are timed (0: none)")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/clipft/bench_data_scale"))
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--index-dir", help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-loader", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    base = Path(args.cache_dir)
    rows = []
    for n in sizes:
        start = time.perf_counter()
        root = generate(base / f"n{n}", n)
        print(f"N={n}: data ready ({time.perf_counter() - start:.0f} s)", flush=True)
        row: dict = {"N": n}
        for w in workers:
            index_dir = base / f"index-n{n}-w{w}"
            shutil.rmtree(index_dir, ignore_errors=True)
            first = run_child(root, index_dir, w)
            row[f"first_s_w{w}"] = first["setup_s"]
            row[f"first_rss_mb_w{w}"] = first["rss_mb"]
            row[f"first_rss_growth_mb_w{w}"] = first["rss_mb"] - first["rss_imports_mb"]
            row["rss_imports_mb"] = first["rss_imports_mb"]
            row["files"] = first["files"]
            print(f"  first setup, {w} worker(s): {first['setup_s']:.2f} s, peak RSS {first['rss_mb']:.0f} MB "
                  f"({first['rss_mb'] - first['rss_imports_mb']:.0f} MB above the imports' {first['rss_imports_mb']:.0f})",
                  flush=True)
        second = run_child(root, index_dir, workers[-1])
        row["second_s"], row["second_rss_mb"] = second["setup_s"], second["rss_mb"]
        print(f"  second setup: {second['setup_s']:.2f} s, peak RSS {second['rss_mb']:.0f} MB", flush=True)
        if n == args.loader_size:
            for loader in ("folder", "cache", "streaming"):
                figures = run_child(root, index_dir, workers[-1], loader)
                row[f"loader_img_s_{loader}"] = figures["loader_img_s"]
                print(f"  train loader, {loader}: {figures['loader_img_s']:.0f} img/s", flush=True)
        rows.append(row)

    result = {"rows": rows}
    if len(sizes) > 1:
        result["exponent_first"] = exponent(sizes, [r[f"first_s_w{workers[-1]}"] for r in rows])
        result["exponent_second"] = exponent(sizes, [r["second_s"] for r in rows])
    if len(workers) > 1:
        result["speedup"] = rows[-1][f"first_s_w{workers[0]}"] / rows[-1][f"first_s_w{workers[-1]}"]
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    last = rows[-1]
    print(
        f"RESULT | N={last['N']} ({last['files']} files) | first setup "
        + " / ".join(f"{last[f'first_s_w{w}']:.1f} s ({w} w)" for w in workers)
        + f" | speed-up {result.get('speedup', float('nan')):.2f}x | second {last['second_s']:.2f} s"
        + f" | peak RSS {max(last[f'first_rss_mb_w{w}'] for w in workers):.0f} MB"
        + f" (+{max(last[f'first_rss_growth_mb_w{w}'] for w in workers):.0f} over imports)"
        + f" | exponent first {result.get('exponent_first', float('nan')):.2f}, second {result.get('exponent_second', float('nan')):.2f}"
    )


if __name__ == "__main__":
    main()
