"""clipft-demo: the Gradio app, driven with gradio's own client against a server started here."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

gradio = pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

from clipft.cli.ask import rank_images  # noqa: E402
from clipft.cli.demo import DEFAULT_HOST, DemoBackend, build_app, build_parser  # noqa: E402
from clipft.evaluation.inference import expand_image_paths, predict_probs  # noqa: E402
from clipft.methods.loading import load_module  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((DEFAULT_HOST, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(colour_run):
    model = load_module(colour_run["ckpt"])
    images = expand_image_paths([colour_run["data"] / "test"])
    backend = DemoBackend(model, images, top_k=3)
    app = build_app(backend)
    port = free_port()
    app.launch(server_name=DEFAULT_HOST, server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(colour_run["data"])])
    try:
        yield {"client": Client(f"http://{DEFAULT_HOST}:{port}/", verbose=False), "model": model, "images": images,
               "app": app, "backend": backend}
    finally:
        app.close()


def test_default_bind_is_this_machine_only():
    args = build_parser().parse_args(["--ckpt", "x.ckpt"])
    assert args.host == "127.0.0.1"


def test_classify_endpoint_returns_the_checkpoints_top_k_and_a_gradcam_overlay(served):
    path = served["images"][0]
    label, overlay = served["client"].predict(handle_file(str(path)), api_name="/classify")
    probs = predict_probs(served["model"], [path])[0]
    expected = probs.topk(3)
    names = served["model"].class_names
    assert label["label"] == names[int(expected.indices[0])]
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx({names[int(i)]: float(v) for v, i in zip(expected.values, expected.indices)}, abs=1e-5)
    pytest.importorskip("pytorch_grad_cam")
    from PIL import Image

    assert overlay and Image.open(overlay).size[0] > 0  # the Grad-CAM image came back as a file


def test_ask_endpoint_ranks_the_folder_like_clipft_ask(served):
    gallery = served["client"].predict("red", 4, api_name="/ask")
    expected = rank_images(served["model"], served["images"], ["red"], top=4)[0]["results"]
    assert [item["caption"].split()[-1] for item in gallery] == [f"{Path(r['path']).parent.name}/{Path(r['path']).name}" for r in expected]
    assert all(os.path.isfile(item["image"]) for item in gallery)  # the images themselves came back (downloaded by the client)
    scores = [float(item["caption"].split()[0]) for item in gallery]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(expected[0]["score"], abs=1e-3)


def test_a_bad_request_is_a_readable_error_not_a_trace(served):
    with pytest.raises(Exception, match="description of a sign"):
        served["client"].predict("   ", 3, api_name="/ask")
    with torch.no_grad():
        assert served["backend"].ask("green", 2)[0][1].split()[-1].endswith(".png")
    with pytest.raises(Exception, match="drop an image"):
        served["client"].predict(None, api_name="/classify")


def test_the_cli_launches_on_127_0_0_1_with_the_folder_allowed(colour_run, monkeypatch):
    from clipft.cli.demo import main

    launched = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    folder = colour_run["data"] / "test"
    example = next(folder.rglob("*.png"))
    assert main(["--ckpt", str(colour_run["ckpt"]), "--images", str(folder), "--example", str(example)]) == 0
    assert launched["server_name"] == "127.0.0.1" and launched["share"] is False
    assert str(folder.resolve()) in launched["allowed_paths"]
    assert main(["--ckpt", str(colour_run["ckpt"]), "--example", str(folder / "missing.png")]) == 1
