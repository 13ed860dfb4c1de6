"""``clipft-predict``: classify images with a trained checkpoint.

    clipft-predict --ckpt RUN/checkpoints/best.ckpt IMAGE_OR_DIR... [--topk 5] [--gradcam] [--json]

Folders are searched recursively. Prints a rich table, or one JSON object per image with
``--json``. ``--gradcam`` saves a Grad-CAM overlay of the predicted class per image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipft.cli.common import (
    RegistryHelpParser,
    add_model_args,
    kept_paths,
    load_model,
    print_json_lines,
    report_skipped,
    run_cli,
    skip_list,
)


def build_parser() -> argparse.ArgumentParser:
    parser = RegistryHelpParser(prog="clipft-predict", description="Classify images with a clipft checkpoint.")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    add_model_args(parser)
    parser.add_argument("--topk", type=int, default=5, help="how many classes to show per image (default: 5)")
    parser.add_argument("--gradcam", action="store_true", help="save a Grad-CAM overlay of the predicted class per image")
    parser.add_argument("--gradcam-dir", default="gradcam", help="where --gradcam writes overlays (default: ./gradcam)")
    return parser


def predict(
    model: Any, paths: Sequence[Path], topk: int, batch_size: int, skipped: list[dict[str, str]] | None = None
) -> list[dict[str, Any]]:
    """One record per image: ``{"path", "label", "prob", "topk": [{"label", "prob"}, ...]}``.

    ``skipped``: collect undecodable images there instead of stopping (``--on-bad-image skip``).
    """
    from clipft.evaluation.inference import predict_probs

    probs = predict_probs(model, paths, batch_size, skipped)  # raises if every image was skipped
    if skipped:
        paths = kept_paths(paths, skipped)
    k = max(1, min(topk, probs.shape[1]))
    values, indices = probs.topk(k, dim=-1)
    records = []
    for path, vals, idxs in zip(paths, values.tolist(), indices.tolist()):
        top = [{"label": model.class_names[i], "prob": round(v, 6)} for v, i in zip(vals, idxs)]
        records.append({"path": str(path), "label": top[0]["label"], "prob": top[0]["prob"], "topk": top})
    return records


def save_overlays(model: Any, records: list[dict[str, Any]], out_dir: Path, batch_size: int) -> None:
    """Write ``<out_dir>/<stem>_gradcam.png`` per record and add its path as ``record['gradcam']``."""
    from PIL import Image

    from clipft.evaluation.gradcam import explain_paths

    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        targets = [model.class_names.index(r["label"]) for r in chunk]
        for record, img in zip(chunk, explain_paths(model, [r["path"] for r in chunk], targets)):
            name = f"{Path(record['path']).stem}_gradcam.png"
            n = 1
            while name in used:
                name, n = f"{Path(record['path']).stem}_{n}_gradcam.png", n + 1
            used.add(name)
            Image.fromarray(img).save(out_dir / name)
            record["gradcam"] = str(out_dir / name)


def print_table(records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="clipft-predict", show_lines=False)
    table.add_column("image", overflow="fold")
    table.add_column("prediction", style="bold")
    table.add_column("prob", justify="right")
    table.add_column("runners-up")
    if any("gradcam" in r for r in records):
        table.add_column("grad-cam", overflow="fold")
    for r in records:
        others = ", ".join(f"{t['label']} {t['prob']:.2f}" for t in r["topk"][1:])
        row = [r["path"], r["label"], f"{r['prob']:.3f}", others]
        if "gradcam" in r:
            row.append(r["gradcam"])
        table.add_row(*row)
    Console().print(table)


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from clipft.errors import ConfigError
    from clipft.evaluation.inference import expand_image_paths

    if args.topk < 1:
        raise ConfigError(f"--topk must be at least 1, got {args.topk}")
    paths = expand_image_paths(args.inputs)
    model = load_model(args)
    skipped = skip_list(args)
    records = predict(model, paths, args.topk, args.batch_size, skipped)
    report_skipped(skipped)
    if args.gradcam:
        save_overlays(model, records, Path(args.gradcam_dir), args.batch_size)
    if args.json:
        print_json_lines(records)
    else:
        print_table(records)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
