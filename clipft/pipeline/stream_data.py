"""``python -m clipft.stream_data OUT [overrides]``: write a dataset's splits as a litdata stream.

The dataset is the ``data`` node composed exactly as ``train.py`` composes it (same overrides,
so the same split, dedupe policy and clean test view); :func:`clipft.data.streaming.write_stream`
writes it. Then train from the stream with ``python train.py data=streaming data.input_dir=OUT``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from clipft.errors import ClipftError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipft.stream_data", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the stream's folder, or an object-store URI litdata can write (s3://bucket/name)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides choosing the data, as for train.py (data=gtsrb ...)")
    parser.add_argument("--workers", type=int, default=1, help="litdata.optimize worker processes (default 1)")
    parser.add_argument("--chunk-bytes", default="64MB", help="target chunk size (default 64MB)")
    return parser


def compose_train_config(overrides: Sequence[str]):
    """``train.yaml`` with ``overrides``, as train.py composes it, its ``${hydra:...}`` values resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from clipft.prompts import package_file

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(package_file("conf")), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):  # compose() leaves the runtime dirs unset: the cwd is the run dir here
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.runtime.output_dir = os.getcwd()
    HydraConfig.instance().set_config(cfg)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from clipft.data.streaming import write_stream
        from clipft.pipeline.building import build_datamodule

        datamodule = build_datamodule(compose_train_config(args.overrides))
        out = write_stream(datamodule, args.out, num_workers=args.workers, chunk_bytes=args.chunk_bytes)
    except ClipftError as exc:  # one line, as python -m clipft.soup reports it
        print(f"clipft error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}; train from it with: python train.py data=streaming data.input_dir={args.out}")
    return 0
