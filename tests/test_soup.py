"""Model soups of a sweep: a soup of one is that model, greedy never loses val to its best
ingredient, mixed architectures or classes are refused, and the soup loads like any checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_clip_pipeline import train

from clipft.errors import CheckpointError
from clipft.methods.loading import load_module
from clipft.pipeline.soup import average_state_dicts, main, make_soup


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_clip_dir):
    """Three fine-tuning runs of one tiny CLIP that differ in learning rate (a -m sweep's job folders)."""
    root = tmp_path_factory.mktemp("sweep")
    for i, lr in enumerate(("1e-3", "3e-3", "1e-2")):
        train([f"model.clip.name_or_path={tiny_clip_dir}", f"model.optimizer.lr={lr}", "model.scheduler.warmup_steps=1"], root / str(i))
    return root


def test_a_soup_of_one_checkpoint_is_that_checkpoint(sweep, tmp_path):
    single = tmp_path / "one"
    shutil.copytree(sweep / "0", single / "0")
    report = make_soup(single, tmp_path / "soup")
    souped, original = load_module(report["checkpoint"]), load_module(single / "0" / "run" / "checkpoints" / "best.ckpt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(souped(x), original(x))


def test_greedy_soup_is_never_worse_on_val_than_its_best_ingredient(sweep, tmp_path):
    assert main([str(sweep), "--greedy", "--out", str(tmp_path / "g")]) == 0
    report = json.loads((tmp_path / "g" / "soup.json").read_text())
    best = max(r["val_accuracy"] for r in report["ingredients"])
    assert report["greedy"]["val_accuracy"] >= best and len(report["ingredients"]) == 3
    assert "uniform soup (3)" in (tmp_path / "g" / "soup.md").read_text()
    module = load_module(report["checkpoint"])  # eval.py and the CLIs take it like any checkpoint
    assert module.checkpoint_meta["soup"]["kind"] == "greedy"


def test_uniform_average_is_the_mean_of_floats_and_keeps_integer_buffers():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(2)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 2


def test_runs_from_another_model_or_other_classes_are_refused(sweep, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(sweep / "0", mixed / "0")
    shutil.copytree(sweep / "1", mixed / "1")
    ckpt_path = mixed / "1" / "run" / "checkpoints" / "best.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["hyper_parameters"]["class_names"] = list(reversed(ckpt["hyper_parameters"]["class_names"]))
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError, match="other classes"):
        make_soup(mixed, tmp_path / "s")
    ckpt["hyper_parameters"]["class_names"] = list(reversed(ckpt["hyper_parameters"]["class_names"]))
    ckpt["clipft"]["module"] = "clipft.methods.linear_head_finetune.LinearHeadFineTune"
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError, match="another method"):
        make_soup(mixed, tmp_path / "s")


def test_greedy_soup_follows_the_reference_code_on_ties(sweep, tmp_path, monkeypatch):
    """mlfoundations/model-soups @d5398f1 main.py:152-153 (sort ascending, reverse: ties in reversed name order)
    and main.py:181 (keep an ingredient only if val improves, ``>``); ``--keep-ties`` is the paper's ``>=``."""
    import operator

    from clipft.pipeline import soup

    class Tie:  # every soup and ingredient scores the same: each decision is a tie
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, state):
            return 0.5

    monkeypatch.setattr(soup, "ValScorer", Tie)
    scores = [0.5, 0.7, 0.5, 0.7]
    reference = sorted(dict(enumerate(scores)).items(), key=operator.itemgetter(1))
    reference.reverse()
    assert soup.greedy_order(scores) == [i for i, _ in reference] == [3, 1, 2, 0]
    strict = make_soup(sweep, tmp_path / "strict", greedy=True)
    assert strict["greedy"]["members"] == 1 and strict["greedy"]["tie_rule"] == ">"
    assert strict["greedy"]["kept"] == [str(sorted(sweep.glob("**/checkpoints/best.ckpt"))[-1])]  # last name first on a tie
    loose = make_soup(sweep, tmp_path / "loose", greedy=True, keep_ties=True)
    assert loose["greedy"]["members"] == 3 and loose["greedy"]["tie_rule"] == ">="
