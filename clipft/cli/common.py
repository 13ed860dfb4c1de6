"""What the inference CLIs share: checkpoint/device options, loading, and one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from clipft.errors import ClipftError


class RegistryHelpParser(argparse.ArgumentParser):
    """An ArgumentParser whose ``--help`` ends with what :mod:`clipft.registry` holds of ``kinds``
    (clipft's own and every installed ``clipft.plugins`` package's): read only when help is shown."""

    def __init__(self, *args: Any, registry_kinds: Sequence[str] = ("method", "backbone"), **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.registry_kinds = tuple(registry_kinds)

    def format_help(self) -> str:
        from clipft import registry

        self.epilog = (
            "registered (clipft.registry; out-of-tree packages add theirs through the 'clipft.plugins' "
            f"entry points):\n{registry.listing(self.registry_kinds)}"
        )
        return super().format_help()


def add_model_args(parser: argparse.ArgumentParser, batch_output: bool = True) -> None:
    """The checkpoint options every CLI takes; ``batch_output``: also ``--json`` and ``--on-bad-image``
    (the batch CLIs; the demo app has neither)."""
    parser.add_argument("--ckpt", required=True, help="a clipft checkpoint, e.g. outputs/RUN/TIME/checkpoints/best.ckpt")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    if batch_output:
        add_batch_output_args(parser)
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="DANGEROUS: build whatever the checkpoint names, even outside clipft's registry (a crafted file can run "
        "any code this way); only for files from a source you trust",
    )


def add_batch_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    parser.add_argument(
        "--on-bad-image",
        choices=("error", "skip"),
        default="error",
        help="an image that cannot be decoded: stop with its name (error, default) or leave it out and list it (skip)",
    )


def check_model_args(args: argparse.Namespace) -> str:
    """Bad option values: one line naming the option, before the checkpoint is read; returns the device."""
    from clipft.errors import ConfigError

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    return resolve_device(args.device)


def resolve_device(name: str) -> str:
    """``auto`` -> cuda if available, else cpu; an unavailable or unknown device is a one-line error."""
    import torch

    from clipft.errors import ConfigError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r} is not a device name; use cpu, cuda, cuda:1, mps or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available on this machine; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..); pick one of them"
            )
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: Apple MPS is not available here; use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {name}: clipft's CLIs run on cpu, cuda or mps")
    return name


def load_model(args: argparse.Namespace):
    """The checkpoint's module, rebuilt from its hyper-parameters alone (no training config needed)."""
    from clipft.methods.loading import load_module

    device = check_model_args(args)
    return load_module(args.ckpt, map_location=device, trust_checkpoint=bool(getattr(args, "trust_checkpoint", False)))


def skip_list(args: argparse.Namespace) -> list[dict[str, str]] | None:
    """A list to collect undecodable images in with ``--on-bad-image skip``; None (raise) otherwise."""
    return [] if getattr(args, "on_bad_image", "error") == "skip" else None


def kept_paths(paths: Sequence[Any], skipped: list[dict[str, str]] | None) -> list[Any]:
    """``paths`` without the ones :func:`clipft.evaluation.inference.batches` skipped, in order."""
    gone = {s["path"] for s in skipped or []}
    return [p for p in paths if str(p) not in gone]


def report_skipped(skipped: list[dict[str, str]] | None) -> None:
    """One stderr line per left-out image, so a skip is never silent."""
    for item in skipped or []:
        sys.stderr.write(f"clipft: skipped {item['path']}: {item['error'].split(';')[0]}\n")


def print_json_lines(records: Sequence[dict[str, Any]]) -> None:
    for record in records:
        sys.stdout.write(json.dumps(record) + "\n")


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a :class:`ClipftError` becomes one red line on stderr and exit code 1."""
    try:
        return main(argv)
    except ClipftError as exc:
        from rich.console import Console
        from rich.text import Text

        # printed literally: a file or module name like "[/x]" is text, never rich markup
        line = Text("clipft error:", style="bold red") + Text(" " + " ".join(str(exc).splitlines()))
        Console(stderr=True).print(line, highlight=False, soft_wrap=True)
        return 1
