"""An epoch through ``train.py`` (real loader, decoded-image cache, GPU-side augmentation) against the bare step.

    python benchmarks/e2e_epoch.py --preset vitb32 --batch-size 256 --per-class 1000 --step-json step.json   # GPU
    python benchmarks/e2e_epoch.py --preset tiny --batch-size 16 --per-class 8 --dry-run                  # CPU

Runs ``python train.py`` exactly as a user would (model=clip_tiny with the preset's shape, the
synthetic sign set generated on disk, ``data.cache=true data.augment_on_device=true``), two
epochs, and reads ``train/images_per_s`` of the second epoch (the first pays start-up and
``torch.compile``) from the run's metrics.json, written by the ``epoch_throughput`` callback.
With ``--step-json`` (``train_throughput.py --json``), prints the epoch's share of the bare
step's img/s (target on the GPU: >= 80 %); run the step with ``--classes 10`` to match.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import PRESETS  # noqa: E402


def hydra_value(value) -> str:
    """A Python dict/number as a Hydra override value."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--per-class", type=int, default=1000, help="synthetic training images per class (10 classes)")
    parser.add_argument("--workers", type=int, default=8, help="loader workers")
    parser.add_argument("--step-json", default=None, help="train_throughput.py --json output to compare with")
    parser.add_argument("--dry-run", action="store_true", help="CPU, no accelerator options")
    parser.add_argument("--out", default=None, help="the run directory (default: a temporary one)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    out = Path(args.out or tempfile.mkdtemp(prefix="clipft-e2e-"))
    overrides = [
        "model=clip_tiny",
        "data=synthetic_signs",
        f"data.train_per_class={args.per_class}",
        "data.test_per_class=1",
        "data.val_fraction=0.02",
        "data.cache=true",
        "data.augment_on_device=true",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={0 if args.dry_run else args.workers}",
        "trainer.max_epochs=2",
        "~callbacks.rich_progress_bar",
        "~callbacks.early_stopping",
        "plots=false",
        f"hydra.run.dir={out}",
    ]
    if PRESETS[args.preset]:
        overrides.append(f"model.clip.config={hydra_value(PRESETS[args.preset])}")
    overrides.append("trainer.accelerator=cpu" if args.dry_run else "trainer.accelerator=gpu")
    env = dict(os.environ, CLIPFT_ROOT=str(out), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=out, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"train.py failed (rc {result.returncode}):\n{result.stderr[-4000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    epoch = [h for h in history if "train/images_per_s" in h][-1]
    figures = {"epoch_img_s": epoch["train/images_per_s"], "epoch_time_s": epoch["train/epoch_time_s"], "run": str(out)}
    share = ""
    if args.step_json:
        step = json.loads(Path(args.step_json).read_text())["variants"]["user"]["framework_img_s"]
        figures["step_img_s"], figures["share"] = step, figures["epoch_img_s"] / step
        share = f" | bare step {step:.1f} img/s | epoch / step = {figures['share']:.1%}"
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    print(f"RESULT | e2e_epoch | preset={args.preset} bs={args.batch_size} train images={metrics['data']['train']} (10 classes) "
          f"cache+augment_on_device | epoch {figures['epoch_img_s']:.1f} img/s ({figures['epoch_time_s']:.1f} s){share}")


if __name__ == "__main__":
    main()
