"""``clipft-export CKPT OUT --format hf|open_clip|safetensors|onnx``: a checkpoint in a format people deploy.

The export is loaded back with the target's own loader and its logits compared with the
checkpoint's before the folder is kept (see :mod:`clipft.exporting`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clipft.cli.common import RegistryHelpParser, run_cli


def build_parser() -> argparse.ArgumentParser:
    from clipft.exporting import FORMATS

    parser = RegistryHelpParser(prog="clipft-export", description=__doc__.splitlines()[0],
                                registry_kinds=("exporter", "method", "backbone"))
    parser.add_argument("ckpt", help="a clipft checkpoint, e.g. outputs/RUN/checkpoints/best.ckpt")
    parser.add_argument("out", help="the folder to write (must be empty or new, unless --overwrite)")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                        help="hf: CLIPModel.from_pretrained folder + class head; open_clip: local-dir folder + class head; "
                        "safetensors: the whole module; onnx: pixels -> logits")
    parser.add_argument("--overwrite", action="store_true", help="replace what OUT holds (only once the new export is complete)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="DANGEROUS: build whatever the checkpoint names, even outside clipft's registry")
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from clipft.exporting import export_checkpoint

    result = export_checkpoint(args.ckpt, args.fmt, args.out, trust_checkpoint=args.trust_checkpoint, overwrite=args.overwrite)
    print(result.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
