"""bf16 autocast against fp32: the same 20 training steps from the same weights, loss by loss.

    python benchmarks/precision_agreement.py --preset vitb32 --batch-size 64 --steps 20    # GPU
    python benchmarks/precision_agreement.py --preset tiny --batch-size 8 --steps 5 --device cpu   # dry run

Both runs use ``train_throughput.PlainLoop`` (the module's own encoders, losses, optimizer and
schedule) on the same in-memory batches. Reported: the loss of each precision at the first and
the last step and the relative gap at the last step. bf16 rounds activations to 8 mantissa bits,
so the trajectories drift apart slowly; a gap of a few percent after 20 steps is expected, a
different trend (one falls, the other does not) is a bug.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import PRESETS, PlainLoop, class_names, compose_config, in_memory_loader, make_batches  # noqa: E402


def losses(module, batches, precision: str, device: torch.device, steps: int) -> list[float]:
    loop = PlainLoop(copy.deepcopy(module), in_memory_loader(batches, steps), precision, device)
    recorded = [loop.step() for _ in range(steps)]
    return [float(x) for x in recorded]  # one sync, at the end


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=58)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lightning as L

    from clipft.pipeline.building import build_model

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(args.device)
    args.channels_last = False
    args.precision = "32-true"
    L.seed_everything(0, verbose=False)
    lightning_device = "gpu" if device.type == "cuda" else device.type
    cfg = compose_config(argparse.Namespace(**{**vars(args), "device": lightning_device}), tempfile.mkdtemp())
    module = build_model(cfg, class_names(args.classes))
    batches = make_batches(args, int(module.preprocessing["image_size"]), args.classes, device)
    fp32 = losses(module, batches, "32-true", device, args.steps)
    bf16 = losses(module, batches, "bf16-mixed", device, args.steps)
    gap = abs(bf16[-1] - fp32[-1]) / max(abs(fp32[-1]), 1e-12)
    both_fall = (fp32[-1] < fp32[0]) == (bf16[-1] < bf16[0])
    figures = {"fp32": fp32, "bf16": bf16, "relative_gap_last": gap, "same_trend": both_fall}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    print(
        f"RESULT | precision_agreement | preset={args.preset} bs={args.batch_size} steps={args.steps} "
        f"device={torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'} | fp32 loss {fp32[0]:.4f} -> {fp32[-1]:.4f} "
        f"| bf16 loss {bf16[0]:.4f} -> {bf16[-1]:.4f} | relative gap at step {args.steps}: {gap:.2%} | same trend: {both_fall}"
    )


if __name__ == "__main__":
    main()
