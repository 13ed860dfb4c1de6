"""``clipft-ask``: ask a sign, with a CLIP-style checkpoint and free text.

Rank a folder of images by how well they match each query (text -> image retrieval)::

    clipft-ask --ckpt RUN/checkpoints/best.ckpt --images DIR "no left turn" [--top 10]

Classify one image against candidate labels given on the command line (zero-shot on the fly)::

    clipft-ask --ckpt RUN/checkpoints/best.ckpt --image sign.png "no left turn" "stop" "yield"

Each text is wrapped in the checkpoint's prompt templates (as its classes were in training)
unless ``--raw`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipft.cli.common import (
    add_model_args,
    kept_paths,
    load_model,
    print_json_lines,
    report_skipped,
    run_cli,
    skip_list,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipft-ask", description="Match images and free text with a CLIP-style clipft checkpoint."
    )
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="queries (with --images) or candidate labels (with --image)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--images", metavar="DIR", help="rank the images under DIR (recursively) for each query")
    mode.add_argument("--image", metavar="FILE", help="classify this image against the TEXT labels")
    add_model_args(parser)
    parser.add_argument("--top", type=int, default=10, help="images to list per query with --images (default: 10)")
    parser.add_argument("--raw", action="store_true", help="encode each text as is, without the prompt templates")
    return parser


def prompts_for(model: Any, texts: Sequence[str], raw: bool) -> list[list[str]]:
    from clipft.evaluation.inference import prompt_templates
    from clipft.prompts import build_class_prompts

    if raw:
        return [[t] for t in texts]
    return build_class_prompts(list(texts), prompt_templates(model))


def rank_images(model: Any, paths: Sequence[Path], queries: Sequence[str], top: int, raw: bool = False,
                batch_size: int = 64, skipped: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Per query: the ``top`` best-matching images by cosine similarity, best first (``skipped``:
    collect undecodable images there instead of stopping)."""
    from clipft.evaluation.inference import image_features

    images = image_features(model, paths, batch_size, skipped)
    if skipped:
        paths = kept_paths(paths, skipped)
    return rank_features(model, images, paths, queries, top, raw)


def rank_features(model: Any, images: Any, paths: Sequence[Path], queries: Sequence[str], top: int,
                  raw: bool = False) -> list[dict[str, Any]]:
    """:func:`rank_images` on image embeddings already computed (``images``: N x D, in the order of ``paths``)."""
    from clipft.evaluation.inference import text_features

    texts = text_features(model, prompts_for(model, queries, raw))
    scores = texts @ images.t()  # queries x images
    k = min(top, len(paths))
    out = []
    for query, row in zip(queries, scores):
        values, idx = row.topk(k)
        out.append({
            "query": query,
            "results": [{"rank": r + 1, "path": str(paths[i]), "score": round(v, 6)}
                        for r, (v, i) in enumerate(zip(values.tolist(), idx.tolist()))],
        })
    return out


def classify_image(model: Any, path: Path, labels: Sequence[str], raw: bool = False) -> dict[str, Any]:
    """Softmax over the candidate labels (the checkpoint's temperature), best first."""
    from clipft.evaluation.inference import clip_logit_scale, image_features, text_features

    image = image_features(model, [path])[0]
    texts = text_features(model, prompts_for(model, labels, raw))
    sims = texts @ image
    probs = (clip_logit_scale(model) * sims).softmax(dim=-1)
    order = probs.argsort(descending=True).tolist()
    ranked = [{"label": labels[i], "prob": round(float(probs[i]), 6), "similarity": round(float(sims[i]), 6)} for i in order]
    return {"path": str(path), "label": ranked[0]["label"], "labels": ranked}


def print_rankings(rankings: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for entry in rankings:
        table = Table(title=f"images matching {entry['query']!r}")
        table.add_column("rank", justify="right")
        table.add_column("image", overflow="fold")
        table.add_column("similarity", justify="right")
        for r in entry["results"]:
            table.add_row(str(r["rank"]), r["path"], f"{r['score']:.3f}")
        console.print(table)


def print_classification(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['path']}")
    table.add_column("label", style="bold")
    table.add_column("prob", justify="right")
    table.add_column("similarity", justify="right")
    for r in result["labels"]:
        table.add_row(r["label"], f"{r['prob']:.3f}", f"{r['similarity']:.3f}")
    Console().print(table)


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from clipft.errors import ConfigError
    from clipft.evaluation.inference import expand_image_paths, require_text_tower

    texts = [t.strip() for t in args.texts]
    if not all(texts):
        raise ConfigError("every TEXT must be non-empty")
    if args.image and len(texts) < 2:
        raise ConfigError(f"--image classifies among candidate labels: give at least two, got {texts}")
    if args.images and not Path(args.images).is_dir():
        raise ConfigError(f"--images expects a folder of images, got {args.images!r}")
    if args.image and not Path(args.image).is_file():
        raise ConfigError(f"--image expects an image file, got {args.image!r}")
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    model = load_model(args)
    require_text_tower(model, "clipft-ask")
    if args.images:
        skipped = skip_list(args)
        rankings = rank_images(model, expand_image_paths([args.images]), texts, args.top, args.raw, args.batch_size, skipped)
        report_skipped(skipped)
        print_json_lines(rankings) if args.json else print_rankings(rankings)
    else:
        result = classify_image(model, Path(args.image), texts, args.raw)
        print_json_lines([result]) if args.json else print_classification(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
