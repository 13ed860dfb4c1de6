"""What the inference CLIs share: checkpoint/device options, loading, and one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from clipft.errors import ClipftError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="a clipft checkpoint, e.g. outputs/RUN/TIME/checkpoints/best.ckpt")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_model(args: argparse.Namespace):
    """The checkpoint's module, rebuilt from its hyper-parameters alone (no training config needed)."""
    from clipft.modules.loading import load_module

    return load_module(args.ckpt, map_location=resolve_device(args.device))


def print_json_lines(records: Sequence[dict[str, Any]]) -> None:
    for record in records:
        sys.stdout.write(json.dumps(record) + "\n")


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a :class:`ClipftError` becomes one red line on stderr and exit code 1."""
    try:
        return main(argv)
    except ClipftError as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]clipft error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        return 1
