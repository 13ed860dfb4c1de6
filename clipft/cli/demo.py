"""``clipft-demo --ckpt CKPT [--images DIR]``: a local Gradio app over a trained checkpoint.

- **Classify**: drop an image, get the top-k classes with probabilities and a Grad-CAM overlay of
  the top class (when ``grad-cam`` is installed).
- **Ask a sign** (CLIP-style checkpoints with ``--images``): type a sentence, get the folder's
  best-matching images. The folder is embedded once at start-up, each query costs one text pass.

Bound to 127.0.0.1 unless ``--host`` says otherwise (the app reads files from this machine and
runs a model: exposing it is a decision, not a default). The app's functions are also Gradio
API endpoints (``/classify``, ``/ask``), callable with ``gradio_client``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipft.cli.common import add_model_args, load_model, run_cli

DEFAULT_HOST = "127.0.0.1"


class DemoBackend:
    """What the app's buttons call: plain Python, usable (and tested) without a browser."""

    def __init__(self, model: Any, images: Sequence[Path] = (), top_k: int = 5, batch_size: int = 64) -> None:
        from clipft.evaluation.inference import image_features, require_text_tower

        self.model, self.top_k, self.batch_size = model, int(top_k), int(batch_size)
        self.class_names = list(model.class_names)
        self.images = [Path(p) for p in images]
        self.image_features = None
        if self.images:
            require_text_tower(model, "clipft-demo --images")
            self.image_features = image_features(model, self.images, self.batch_size)

    def classify(self, path: str | None) -> tuple[dict[str, float], Any]:
        """``({class: probability} of the top k, Grad-CAM overlay (uint8 H x W x 3) or None)``."""
        from clipft.errors import ConfigError
        from clipft.evaluation.inference import predict_probs

        if not path:
            raise ConfigError("drop an image first")
        probs = predict_probs(self.model, [path])[0]
        values, idx = probs.topk(min(self.top_k, len(self.class_names)))
        top = {self.class_names[i]: float(v) for v, i in zip(values.tolist(), idx.tolist())}
        return top, self.gradcam(path, int(idx[0]))

    def gradcam(self, path: str, target: int) -> Any:
        try:
            import pytorch_grad_cam  # noqa: F401 - the explain extra
        except ImportError:
            return None
        from clipft.evaluation.gradcam import explain_paths

        return explain_paths(self.model, [path], [target])[0]

    def ask(self, query: str, k: int = 8) -> list[tuple[str, str]]:
        """The ``k`` folder images most similar to ``query``, best first, as ``(path, caption)``."""
        from clipft.cli.ask import rank_features
        from clipft.errors import ConfigError

        if self.image_features is None:
            raise ConfigError("start the demo with --images DIR to search a folder")
        if not str(query or "").strip():
            raise ConfigError("type a description of a sign")
        (ranked,) = rank_features(self.model, self.image_features, self.images, [query.strip()], int(k))
        return [(r["path"], f"{r['score']:.3f}  {Path(r['path']).parent.name}/{Path(r['path']).name}") for r in ranked["results"]]


def build_app(backend: DemoBackend, example: str | None = None, example_query: str | None = None) -> Any:
    """The Gradio Blocks app (not launched); ``example`` / ``example_query`` are shown, answered, when the page opens."""
    import gradio as gr

    from clipft.errors import ClipftError

    def classify(path: str | None):
        try:
            return backend.classify(path)
        except ClipftError as exc:
            raise gr.Error(str(exc)) from None

    def ask(query: str, k: float):
        try:
            return backend.ask(query, int(k))
        except ClipftError as exc:
            raise gr.Error(str(exc)) from None

    with gr.Blocks(title="clipft demo") as app:
        gr.Markdown(f"## clipft demo\n{len(backend.class_names)} classes. Drop an image to classify it"
                    + (f", or describe a sign to search {len(backend.images)} images." if backend.images else "."))
        with gr.Tab("Classify"):
            with gr.Row():
                image = gr.Image(value=example, type="filepath", label="image", height=320)
                with gr.Column():
                    top = gr.Label(num_top_classes=backend.top_k, label=f"top {backend.top_k}")
                    cam = gr.Image(label="Grad-CAM of the top class", height=240)
            gr.Button("Classify", variant="primary").click(classify, image, [top, cam], api_name="classify")
            if example:
                app.load(classify, image, [top, cam])
        if backend.images:
            with gr.Tab("Ask a sign"):
                with gr.Row():
                    query = gr.Textbox(value=example_query, label="describe a sign", placeholder="a red circle with a white bar")
                    k = gr.Slider(1, min(24, len(backend.images)), value=min(8, len(backend.images)), step=1, label="images")
                gallery = gr.Gallery(label="best matches", columns=4, height=360)
                gr.Button("Search", variant="primary").click(ask, [query, k], gallery, api_name="ask")
                query.submit(ask, [query, k], gallery)
                if example_query:
                    app.load(ask, [query, k], gallery)
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipft-demo", description=__doc__.splitlines()[0])
    add_model_args(parser, batch_output=False)  # no --json / --on-bad-image: the app shows its own errors
    parser.add_argument("--images", metavar="DIR", help="a folder to search with free text (CLIP-style checkpoints)")
    parser.add_argument("--example", metavar="IMAGE", help="an image shown and classified when the page opens")
    parser.add_argument("--example-query", metavar="TEXT", help="a search shown and answered when the page opens")
    parser.add_argument("--top-k", type=int, default=5, help="classes to show per image (default: 5)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default: {DEFAULT_HOST}, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 picks a free one)")
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from clipft.errors import ConfigError
    from clipft.evaluation.inference import expand_image_paths

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("clipft-demo needs gradio: pip install 'clipft[demo]'") from None
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.images and not Path(args.images).is_dir():
        raise ConfigError(f"--images expects a folder of images, got {args.images!r}")
    if args.example and not Path(args.example).is_file():
        raise ConfigError(f"--example expects an image file, got {args.example!r}")
    model = load_model(args)
    images = expand_image_paths([args.images]) if args.images else []
    app = build_app(DemoBackend(model, images, args.top_k, args.batch_size), args.example, args.example_query)
    app.launch(server_name=args.host, server_port=args.port or None, share=False,
               allowed_paths=[str(Path(p).resolve()) for p in (args.images, args.example) if p] or None)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
