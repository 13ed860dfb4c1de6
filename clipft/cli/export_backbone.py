"""``python -m clipft.cli.export_backbone CKPT OUT``: a trained dual encoder as a backbone folder.

The folder (safetensors weights, JSON config, the text tower's HF folder) loads by path in every
clipft CLIP method: ``clip_backbone@model.clip=sign_clip model.clip.name_or_path=OUT``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clipft.cli.common import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipft.cli.export_backbone", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="a clipft checkpoint whose backbone is a dual encoder (e.g. experiment=align_gtsrb's best.ckpt)")
    parser.add_argument("out", help="the folder to write")
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from clipft.errors import CheckpointError
    from clipft.methods.loading import load_module
    from clipft.models.backbone_folder import save_backbone_folder

    module = load_module(args.ckpt)
    backbone = getattr(module, "backbone", None)
    if backbone is None or not hasattr(backbone, "tower_spec"):
        raise CheckpointError(f"{args.ckpt!r} holds a {type(module).__name__} without a dual-encoder backbone; nothing to export")
    out = save_backbone_folder(backbone, args.out)
    print(f"wrote {out} (load it with clip_backbone@model.clip=sign_clip model.clip.name_or_path={out})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
