"""Epoch time with a feature bank vs today, for the frozen-image-tower methods (issue 34).

Each (method, mode) is one ``train.py`` run of the 58-class protocol from sign-CLIP at 128 px on the full
training split (``experiment=sign_clip58_fewshot data.shots=null``), ``--epochs`` epochs, early stopping off:

* ``pixels``: the loop without a bank (``callbacks.feature_bank=null``), the frozen image tower on every batch;
* ``bank``: ``callbacks=[default,feature_bank]`` with a fresh bank folder, so the one-off build is timed
  (``feature bank: ... computed in S s`` in train.log) and the epochs read rows.

Reported per run: the median training-epoch time of epochs 2.. (``train/epoch_time_s``), the run's wall time,
and for the bank its build cost and break-even epoch (build / (pixel epoch - bank epoch)).

    python benchmarks/feature_bank.py --data-root ../shared/data/traffic_sign_58 --epochs 3

Needs models/sign_clip_gtsrb (docs/sign_clip.md) and CLIPFT_WEIGHTS_DIR for nothing (sign-CLIP is a folder).
The last lines printed (``RESULT | ...``) are the rows of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("clip_coop", "clip_adapter", "clip_tip_adapter_f")


def run(method: str, mode: str, args: argparse.Namespace, out: Path) -> dict:
    run_dir = out / f"{method}_{mode}"
    command = [sys.executable, str(ROOT / "train.py"), "experiment=sign_clip58_fewshot", f"data.root={args.data_root}",
               "data.shots=null", f"model={method}", f"trainer.max_epochs={args.epochs}", "callbacks.early_stopping=null",
               "plots=false", "logger=csv", f"hydra.run.dir={run_dir}"]
    if mode == "pixels":  # the loop before banks: no bank at all (the default callbacks validate from one)
        command += ["callbacks.feature_bank=null"]
    if mode == "bank":
        command += ["callbacks=[default,feature_bank]", f"callbacks.feature_bank.directory={out / 'banks'}",
                    f"callbacks.feature_bank.views={args.views}", "callbacks.early_stopping=null"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{method} {mode} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    times = [row["train/epoch_time_s"] for row in metrics.get("history", []) if row.get("train/epoch_time_s") is not None]
    log = (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else ""
    build = sum(float(s) for s in re.findall(r"feature bank: \d+ images x \d+ views computed in ([\d.]+) s", log))
    return {"epoch_s": statistics.median(times[1:] or times), "wall_s": wall, "build_s": build,
            "val": metrics["summary"].get("best_val_acc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data/traffic_sign_58"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=None, help="folder for the runs (default: a new temporary one)")
    args = parser.parse_args()
    import tempfile

    out = Path(args.out or tempfile.mkdtemp(prefix="feature_bank_bench_"))
    for method in args.methods.split(","):
        pixels, bank = run(method, "pixels", args, out), run(method, "bank", args, out)
        saved = pixels["epoch_s"] - bank["epoch_s"]
        break_even = bank["build_s"] / saved if saved > 0 else float("inf")
        print(f"RESULT | {method} | pixels epoch {pixels['epoch_s']:.2f} s | bank epoch {bank['epoch_s']:.2f} s | "
              f"ratio {pixels['epoch_s'] / bank['epoch_s']:.1f}x | bank build {bank['build_s']:.1f} s "
              f"({args.views} views) | break-even epoch {break_even:.1f} | run wall {pixels['wall_s']:.0f} s vs "
              f"{bank['wall_s']:.0f} s | val {pixels['val']:.4f} vs {bank['val']:.4f}", flush=True)


if __name__ == "__main__":
    main()
