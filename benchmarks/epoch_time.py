"""Wall time of one full training epoch of data on a real folder dataset, three ways.

* ``decoded``: ``clipft.data.FolderDataModule`` with ``data.cache=false`` -- every PNG is decoded,
  resized and augmented per sample, in ``--workers`` loader processes.
* ``cache``: the same datamodule with ``data.cache=true`` -- uint8 rows of the decoded-image cache,
  memory-mapped (the one-off cache build is timed separately and not counted in the epoch).
* ``naive``: the loop users come from -- a per-sample ``PIL.Image.open`` / resize / ``to_tensor``
  in a plain ``Dataset`` with ``num_workers=0``.

Each epoch runs the batches through ``--step`` (``none``: data only; ``tiny``: one forward/backward
of the tiny CLIP per batch, so the loader competes with compute as in training).

    nice -n 5 python benchmarks/epoch_time.py --root /work/shared/data/traffic_sign_58/traffic_Data/DATA

The last line printed (``RESULT | ...``) is the row for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ROOT = "/work/shared/data/traffic_sign_58/traffic_Data/DATA"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def datamodule(args, cache: bool, cache_dir: str):
    from clipft.data import FolderDataModule

    dm = FolderDataModule(
        root=args.root,
        batch_size=args.batch_size,
        num_workers=args.workers,
        persistent_workers=False,
        image_size=args.image_size,
        mean=MEAN,
        std=STD,
        val_fraction=0.1,
        test_fraction=0.1,
        cache=cache,
        cache_dir=cache_dir,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


class NaiveDataset(torch.utils.data.Dataset):
    """What a first script does: open, convert, resize, to tensor, normalise, per sample."""

    def __init__(self, samples, image_size: int) -> None:
        from torchvision.transforms import functional as F

        self.samples, self.size, self.F = samples, image_size, F

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        sample = self.samples[i]
        image = Image.open(sample.path).convert("RGB").resize((self.size, self.size))
        tensor = self.F.normalize(self.F.to_tensor(image), MEAN, STD)
        return tensor, sample.label


def make_step(kind: str, image_size: int, num_classes: int):
    if kind == "none":
        return lambda images, labels: None
    from clipft.methods import ContrastiveFineTune

    module = ContrastiveFineTune(
        class_names=[f"sign {i}" for i in range(num_classes)],
        clip={"_target_": "clipft.models.HFCLIPBackbone", "config": {"vision_config": {"image_size": image_size}}},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-4},
    ).train()
    optimizer = module.configure_optimizers()

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        module.training_step((images, labels), 0).backward()
        optimizer.step()

    return step


def epoch(loader, step, on_batch=None) -> tuple[float, int]:
    started, n = time.perf_counter(), 0
    for batch in loader:
        images, labels = batch[0], batch[1]
        if on_batch is not None:
            images = on_batch(images)
        step(images, labels)
        n += len(labels)
    return time.perf_counter() - started, n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="loader workers of the decoded/cache paths")
    parser.add_argument("--step", choices=["none", "tiny"], default="none")
    parser.add_argument("--modes", default="naive,decoded,cache")
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore")
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="clipft-epoch-cache-")
    times: dict[str, float] = {}
    notes: list[str] = []
    dm = datamodule(args, cache=False, cache_dir=cache_dir)
    step = make_step(args.step, args.image_size, dm.num_classes)
    for mode in [m for m in args.modes.split(",") if m]:
        if mode == "naive":
            loader = torch.utils.data.DataLoader(
                NaiveDataset(dm.train_samples, args.image_size), batch_size=args.batch_size, shuffle=True, num_workers=0
            )
            seconds, n = epoch(loader, step)
        elif mode == "decoded":
            seconds, n = epoch(dm.train_dataloader(), step)
        elif mode == "cache":
            t0 = time.perf_counter()
            cached = datamodule(args, cache=True, cache_dir=cache_dir)
            loader = cached.train_dataloader()
            notes.append(f"cache build+setup {time.perf_counter() - t0:.1f}s (once)")
            on_batch = getattr(cached, "on_after_batch_transfer", None) if cached.augment_on_device else None
            seconds, n = epoch(loader, step, (lambda x: on_batch((x, None), 0)[0]) if on_batch else None)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        times[mode] = seconds
        print(f"{mode:>8}: {seconds:7.2f} s for {n} images ({n / seconds:7.1f} img/s)")

    parts = [
        f"root={Path(args.root).name}",
        f"train images={len(dm.train_samples)}",
        f"size={args.image_size}",
        f"bs={args.batch_size}",
        f"workers={args.workers}",
        f"step={args.step}",
        f"torch={torch.__version__}",
        f"cpu threads={torch.get_num_threads()}",
    ]
    parts += [f"{mode} {t:.1f}s" for mode, t in times.items()]
    if "naive" in times:
        parts += [f"naive/{mode}={times['naive'] / t:.2f}x" for mode, t in times.items() if mode != "naive"]
    print("RESULT | epoch_time | " + " | ".join(parts + notes))


if __name__ == "__main__":
    main()
