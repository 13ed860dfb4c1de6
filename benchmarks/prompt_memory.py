"""Peak memory and time of one CoOp training step vs the class count, single pass vs class-chunked prompts.

The step is CoOp's text side as ``clipft.methods.coop`` runs it: the fixed prompt embeddings
``(classes, length, width)`` with the learned context written in, every class prompt encoded by the
text tower with gradients (``clipft.methods.chunked_text.encode_prompts``, ``--chunk-size`` prompts at a
time, or all at once), logits against a batch of (frozen, precomputed) image embeddings, cross-entropy,
backward into the context. The image tower is left out: it is frozen and its cost does not depend on
the class count.

The text tower is ViT-B/16-shaped (HF ``CLIPTextConfig``: width 512, 12 layers, 8 heads, MLP 2048) with
random weights; ``--context-length`` sets the prompt length (77 in CLIP). Every configuration runs in a
fresh subprocess: on CPU the figure is the growth of the process's max RSS over its RSS after the model
and inputs are built and a 1-class warm-up step ran (freed heap trimmed and the high-water mark reset
first, on Linux; allocations over 64 KiB mapped and unmapped one by one, ``MALLOC_MMAP_THRESHOLD_``, so
the RSS follows the live tensors); on CUDA ``torch.cuda.max_memory_allocated`` over the memory allocated
before the step. Step time: the fastest of ``--repeats`` steps, wall and process CPU time (on a shared CPU
the CPU time is the steadier figure).

    python benchmarks/prompt_memory.py --classes 10,100,1000 --context-length 77 --device cuda
    python benchmarks/prompt_memory.py --classes 10,100,1000 --context-length 8   # a small CPU
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_CTX = 4
BATCH = 32


def text_tower_config(context_length: int, layers: int) -> dict:
    """A CLIPConfig dict: ViT-B/16's text tower (width 512, 8 heads, MLP 2048), a tiny unused image tower."""
    return {
        "projection_dim": 512,
        "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": layers,
                        "num_attention_heads": 8, "max_position_embeddings": context_length},
    }


def build(args: argparse.Namespace, classes: int):
    """The frozen backbone, CoOp's fixed prompt embeddings and tokens, the context, image embeddings, labels."""
    from clipft.models import HFCLIPBackbone

    torch.manual_seed(0)
    backbone = HFCLIPBackbone(config=text_tower_config(args.context_length, args.layers)).to(args.device)
    backbone.requires_grad_(False)
    cfg = backbone.model.config.text_config
    length = args.context_length
    ids = torch.randint(0, 256, (classes, length))  # byte tokens; BOS ... EOS, no padding
    ids[:, 0], ids[:, -1] = cfg.bos_token_id, cfg.eos_token_id
    ids = ids.to(args.device)
    tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        fixed = backbone.token_embedding()(ids)
    ctx = torch.nn.Parameter(0.02 * torch.randn(N_CTX, fixed.shape[-1], device=args.device))
    image = torch.nn.functional.normalize(torch.randn(BATCH, backbone.embed_dim, device=args.device), dim=-1)
    labels = torch.randint(0, classes, (BATCH,), device=args.device)
    return backbone, tokens, fixed, ctx, image, labels


def step(backbone, tokens, fixed, ctx, image, labels, chunk_size) -> float:
    """One CoOp step's text side: context written in, all class prompts encoded, CE, backward."""
    from clipft.methods.chunked_text import encode_prompts

    embeddings = fixed.clone()
    embeddings[:, 1 : 1 + N_CTX] = ctx.unsqueeze(0).expand(fixed.shape[0], -1, -1)
    text = encode_prompts(backbone, embeddings, tokens, chunk_size)
    loss = torch.nn.functional.cross_entropy(100.0 * image @ text.t(), labels)
    loss.backward()
    ctx.grad = None
    return float(loss)


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def rss_baseline() -> tuple[int, str]:
    """Freed heap back to the OS, the high-water mark reset to now (Linux ``clear_refs``): the current RSS,
    so the step's growth is not hidden under memory freed while building. Elsewhere: the max RSS so far."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        rss = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
        return int(rss.split()[1]) * 1024, "max RSS growth over the RSS after build (high-water mark reset)"
    except (OSError, StopIteration):
        return max_rss_bytes(), "max RSS growth over the max RSS after build (a lower bound)"


def child(args: argparse.Namespace) -> dict:
    """One configuration, measured in this (fresh) process."""
    cuda = args.device.startswith("cuda")
    torch.set_num_threads(args.threads) if args.threads else None
    chunk = None if args.mode == "single" else args.chunk_size
    parts = build(args, args.classes[0])
    backbone, tokens, fixed, ctx, image, labels = parts
    one = {key: value[:1] for key, value in tokens.items()}
    step(backbone, one, fixed[:1], ctx, image, labels * 0, chunk)  # kernels, thread pools: not the class count's
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base, measure = torch.cuda.memory_allocated(), "cuda max_memory_allocated growth"
    else:
        base, measure = rss_baseline()
    times, cpu_times = [], []
    for _ in range(max(args.repeats, 1)):  # the peak covers every repeat; the time is the fastest
        start, cpu_start = time.perf_counter(), time.process_time()
        step(*parts, chunk)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    seconds, cpu_seconds = min(times), min(cpu_times)
    peak = (torch.cuda.max_memory_allocated() if cuda else max_rss_bytes()) - base
    return {"classes": args.classes[0], "mode": args.mode, "chunk_size": chunk, "context_length": args.context_length,
            "layers": args.layers, "device": args.device, "peak_mib": peak / 2**20, "step_s": seconds,
            "step_cpu_s": cpu_seconds,
            "measure": measure}


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """On CPU, glibc serves every allocation over 64 KiB from its own mapping, returned to the OS when freed: the
    RSS then follows the live tensors (with its default, growing threshold, freed activations stay in the heap and
    a chunked step's RSS counts every chunk's memory that was ever touched)."""
    env = dict(os.environ)
    if not args.device.startswith("cuda"):
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(64 * 1024))
    return env


def run_all(args: argparse.Namespace) -> list[dict]:
    rows = []
    for classes in args.classes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", "--classes", str(classes), "--mode", mode,
                   "--chunk-size", str(args.chunk_size), "--context-length", str(args.context_length),
                   "--layers", str(args.layers), "--device", args.device, "--threads", str(args.threads),
                   "--repeats", str(args.repeats)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=child_env(args))
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                row = {"classes": classes, "mode": mode, "error": (done.stderr or done.stdout)[-400:].strip()}
                print(f"RESULT | prompt_memory | {classes} classes {mode} | FAILED rc={done.returncode}", flush=True)
            else:
                row = json.loads(lines[-1])
                print(f"RESULT | prompt_memory | {classes} classes | {mode:7s} | chunk {row['chunk_size']} | "
                      f"peak +{row['peak_mib']:.0f} MiB | step {row['step_s']:.2f} s ({row['step_cpu_s']:.2f} s CPU)", flush=True)
            rows.append(row)
    return rows


def summary(rows: list[dict]) -> None:
    """The issue's goal: chunked peak flat within 1.5x from 100 to 1,000 classes; the time it costs."""
    found = {(r["classes"], r["mode"]): r for r in rows if "peak_mib" in r}
    lo, hi = min(c for c, _ in found), max(c for c, _ in found)
    for mode in ("single", "chunked"):
        if (lo, mode) in found and (hi, mode) in found:
            ratio = found[(hi, mode)]["peak_mib"] / max(found[(lo, mode)]["peak_mib"], 1e-9)
            print(f"RESULT | prompt_memory | {mode} peak {hi} / {lo} classes: x{ratio:.2f}")
    for classes in sorted({c for c, _ in found}):
        if (classes, "single") in found and (classes, "chunked") in found:
            chunked, single = found[(classes, "chunked")], found[(classes, "single")]
            cost, cpu = chunked["step_s"] / single["step_s"], chunked["step_cpu_s"] / single["step_cpu_s"]
            print(f"RESULT | prompt_memory | {classes} classes: chunked step time x{cost:.2f} of single pass (CPU time x{cpu:.2f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="10,100,1000", help="comma-separated class counts")
    parser.add_argument("--modes", default="single,chunked", help="single (one pass) and/or chunked")
    parser.add_argument("--chunk-size", type=int, default=128, help="prompts per chunk (CoOp's text_chunk_size)")
    parser.add_argument("--context-length", type=int, default=77, help="tokens per prompt (77 in CLIP)")
    parser.add_argument("--layers", type=int, default=12, help="text tower depth (12 in ViT-B/16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="steps per configuration (time: the fastest)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per configuration")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.classes = [int(c) for c in str(args.classes).split(",")]
    args.modes = [m for m in str(args.modes).split(",") if m]
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    print(f"measuring one CoOp step's text side on {args.device}: text tower width 512, {args.layers} layers, 8 heads, "
          f"{args.context_length} tokens per prompt, {N_CTX} context vectors, batch {BATCH}; peak = "
          + ("cuda max_memory_allocated growth" if args.device.startswith("cuda") else "max RSS growth in a fresh process"),
          flush=True)
    rows = run_all(args)
    summary(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))


if __name__ == "__main__":
    main()
