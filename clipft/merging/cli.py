"""``python -m clipft.merging --method ties --runs RUN_A RUN_B --out OUT``: merge fine-tuned runs (see :mod:`clipft.merging.runs`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from clipft.errors import ClipftError
from clipft.merging.runs import DEFAULT_TOP_K, METHODS, merge_runs, merge_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipft.merging",
        description="Merge the backbones of clipft CLIP runs fine-tuned from one pretrained model (task arithmetic, "
        "TIES-merging, Model Stock); each run keeps its own head; lambda is chosen on the runs' validation splits.",
    )
    parser.add_argument("--method", required=True, choices=METHODS, help="task_arithmetic (Ilharco+ 2023), ties (Yadav+ 2023), model_stock (Jang+ 2024)")
    parser.add_argument("--runs", nargs="+", required=True, help="run folders, checkpoints, or folders of runs (every checkpoints/best.ckpt below)")
    parser.add_argument("--out", required=True, help="output folder: OUT/<run>/checkpoints/best.ckpt per run, merge.json, merge.md")
    parser.add_argument("--lambdas", nargs="+", type=float, help="scaling coefficients to try on val (default 0.0 0.1 ... 1.0; not for model_stock)")
    parser.add_argument("--top-k", type=float, help=f"ties: percentage of each task vector's largest magnitudes kept (default {DEFAULT_TOP_K:g})")
    parser.add_argument("--device", help="where val is scored (default: cuda if available, else cpu); merging itself runs on the CPU")
    parser.add_argument(
        "--trust-checkpoint", action="store_true",
        help="DANGEROUS: build whatever the runs' checkpoints and config.yaml name (only for files you trust)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        report = merge_runs(args.method, args.runs, args.out, args.lambdas, args.top_k, trust=args.trust_checkpoint, device=device)
    except ClipftError as exc:
        print(f"clipft error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 1
    print(merge_table(report), end="")
    print(json.dumps({"lambda": report["lambda"], "checkpoints": report["checkpoints"]}))
    return 0
