"""The GPU kit's switches measured where they also run on a CPU (issue 34): torch.compile and 8-bit AdamW.

One FLYP-style training step of a real backbone (default: the sign-CLIP dual encoder, MobileNetV2 + MiniLM,
25 M weights, both towers trained): ``--batch`` random images at its size, the 58 class prompts, CLIP's
cross-entropy over image-text logits, backward, optimizer step. Variants, each timed in interleaved rounds
(so a shared machine's load falls on all of them alike):

* ``eager_adamw``: torch.optim.AdamW (fp32 states: 8 bytes per weight);
* ``eager_adamw8bit``: bitsandbytes.optim.AdamW8bit (uint8 states + block absmax: ~2 bytes per weight), where
  bitsandbytes is installed (0.45+ runs its 8-bit optimizers on the CPU);
* ``compiled_adamw``: both towers ``nn.Module.compile``'d (inductor), AdamW.

Reported: median step time, the optimizer state's bytes, and the ratios against ``eager_adamw``.

    python benchmarks/gpu_kit_cpu.py --backbone models/sign_clip_gtsrb --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))


def build(variant: str, args: argparse.Namespace):
    from clipft.models import DualEncoderBackbone

    torch.manual_seed(0)
    backbone = DualEncoderBackbone(name_or_path=str(args.backbone)).train()
    params = [p for p in backbone.parameters() if p.requires_grad]
    if variant.endswith("adamw8bit"):
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(params, lr=1e-5, weight_decay=0.1)
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1)
    if variant.startswith("compiled"):
        backbone.image_tower.compile()
        backbone.text_tower.compile()
    return backbone, optimizer


def step(backbone, optimizer, images, tokens, labels) -> None:
    image = backbone.encode_image(images)
    text = backbone.encode_text(**tokens)
    logits = backbone.logit_scale.exp() * image @ text.t()
    loss = torch.nn.functional.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=str(ROOT / "models" / "sign_clip_gtsrb"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=58)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--variants", default="eager_adamw,eager_adamw8bit,compiled_adamw")
    args = parser.parse_args()

    variants = []
    for name in args.variants.split(","):
        try:
            variants.append((name, *build(name, args)))
        except ImportError as exc:
            print(f"SKIPPED {name}: {exc}")
    size = int(variants[0][1].preprocessing["image_size"])
    images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(args.classes, (args.batch,), generator=torch.Generator().manual_seed(1))
    tokens = variants[0][1].tokenize([f"a photo of a sign number {i}." for i in range(args.classes)])
    times: dict[str, list[float]] = {name: [] for name, *_ in variants}
    for name, backbone, optimizer in variants:  # warm-up (compilation happens here)
        started = time.perf_counter()
        step(backbone, optimizer, images, tokens, labels)
        print(f"{name}: first step {time.perf_counter() - started:.1f} s")
    for _ in range(args.rounds):
        for name, backbone, optimizer in variants:
            started = time.perf_counter()
            for _ in range(args.steps):
                step(backbone, optimizer, images, tokens, labels)
            times[name].append((time.perf_counter() - started) / args.steps)
    base_time = statistics.median(times["eager_adamw"]) if "eager_adamw" in times else None
    base_state = next((state_bytes(o) for n, _, o in variants if n == "eager_adamw"), None)
    for name, _, optimizer in variants:
        median = statistics.median(times[name])
        state = state_bytes(optimizer)
        ratio_t = f"{median / base_time:.2f}" if base_time else "-"
        ratio_s = f"{state / base_state:.3f}" if base_state else "-"
        print(f"RESULT | gpu_kit_cpu | {name} | batch {args.batch} | step {median:.3f} s (x{ratio_t}) | "
              f"optimizer state {state / 2**20:.1f} MiB (x{ratio_s}) | torch {torch.__version__} | threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
