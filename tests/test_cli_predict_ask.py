"""clipft-predict / clipft-ask on a tiny CLIP trained to tell red, green and blue squares apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipft.cli import ask, predict
from clipft.errors import CheckpointError
from clipft.evaluation.inference import require_text_tower

COLOURS = ["blue", "green", "red"]


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow  # a fresh interpreter (~10 s idle, ~30 s on the shared 2 cores)
def test_predict_console_script_in_fresh_process_without_config(colour_run, tmp_path):
    """The checkpoint alone is enough: run from an empty folder, in a new interpreter."""
    script = Path(sys.executable).with_name("clipft-predict")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "clipft.cli.predict"]
    test_dir = colour_run["data"] / "test"
    result = subprocess.run(
        [*cmd, "--ckpt", str(colour_run["ckpt"]), str(test_dir), "--topk", "2", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = json_lines(result.stdout)
    assert len(records) == 18
    for r in records:
        assert r["label"] == Path(r["path"]).parent.name
        assert len(r["topk"]) == 2 and r["topk"][0]["prob"] >= r["topk"][1]["prob"]


def test_predict_table_and_gradcam_overlays(colour_run, tmp_path, capsys):
    images = [colour_run["data"] / "test" / c / "000.png" for c in COLOURS]
    rc = predict.main(["--ckpt", str(colour_run["ckpt"]), *map(str, images), "--gradcam", "--gradcam-dir", str(tmp_path)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "clipft-predict" in table and "green" in table
    written = sorted(p.name for p in tmp_path.glob("*_gradcam*.png"))
    assert len(written) == 3  # three files all named 000.png: names are made unique


@pytest.mark.parametrize("colour", COLOURS)
def test_ask_ranks_images_of_the_queried_colour_first(colour_run, capsys, colour):
    rc = ask.main(["--ckpt", str(colour_run["ckpt"]), "--images", str(colour_run["data"] / "test"), colour,
                   "--top", "6", "--json"])
    assert rc == 0
    (ranking,) = json_lines(capsys.readouterr().out)
    assert ranking["query"] == colour
    assert [Path(r["path"]).parent.name for r in ranking["results"]] == [colour] * 6
    scores = [r["score"] for r in ranking["results"]]
    assert scores == sorted(scores, reverse=True)


def test_ask_classifies_one_image_against_free_text_labels(colour_run, capsys):
    image = colour_run["data"] / "test" / "green" / "003.png"
    for labels in (["red", "green", "blue"], ["blue", "red", "green"]):
        assert ask.main(["--ckpt", str(colour_run["ckpt"]), "--image", str(image), *labels, "--json"]) == 0
        (result,) = json_lines(capsys.readouterr().out)
        assert result["label"] == "green"
        assert sum(r["prob"] for r in result["labels"]) == pytest.approx(1.0, abs=1e-4)


def test_cli_errors_are_one_clear_line(colour_run, tmp_path, capsys):
    assert predict.main(["--ckpt", str(tmp_path / "nope.ckpt"), str(colour_run["data"] / "test")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert ask.main(["--ckpt", str(colour_run["ckpt"]), "--image", str(tmp_path), "stop", "yield"]) == 1
    assert "--image expects an image file" in capsys.readouterr().err
    img = colour_run["data"] / "test" / "red" / "000.png"
    assert ask.main(["--ckpt", str(colour_run["ckpt"]), "--image", str(img), "stop"]) == 1
    assert "at least two" in capsys.readouterr().err
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    assert predict.main(["--ckpt", str(tmp_path / "bad.ckpt"), str(img)]) == 1
    assert "cannot be loaded safely" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")  # loads safely, but is no clipft checkpoint
    assert predict.main(["--ckpt", str(tmp_path / "foreign.ckpt"), str(img)]) == 1
    assert "not a clipft checkpoint" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not an image")
    assert predict.main(["--ckpt", str(colour_run["ckpt"]), str(tmp_path / "notes.txt")]) == 1
    err = capsys.readouterr().err
    assert "notes.txt" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert predict.main(["--ckpt", str(colour_run["ckpt"]), str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "empty" in err and "Traceback" not in err


def test_ask_needs_a_text_tower():
    with pytest.raises(CheckpointError, match="clipft-predict"):
        require_text_tower(torch.nn.Linear(2, 2), "clipft-ask")


def test_checkpoint_records_the_preprocessing_to_replay(colour_run):
    from clipft.evaluation.inference import model_preprocessing
    from clipft.methods.loading import load_module

    ckpt = torch.load(colour_run["ckpt"], map_location="cpu", weights_only=True)
    recorded = ckpt["clipft"]["preprocessing"]
    assert recorded["image_size"] == 32 and len(recorded["mean"]) == 3
    assert ckpt["clipft"]["eval_transform"] == "clip_eval"
    model = load_module(colour_run["ckpt"])
    assert model_preprocessing(model) == recorded
    assert model.class_names == COLOURS


def test_the_demo_offers_only_options_it_honours():
    """clipft-demo has no table to print as JSON and no batch to skip images in: its --help must not list them."""
    from clipft.cli.demo import build_parser

    text = build_parser().format_help()
    assert "--ckpt" in text and "--trust-checkpoint" in text
    assert "--json" not in text and "--on-bad-image" not in text
