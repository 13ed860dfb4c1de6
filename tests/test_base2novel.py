"""Base-to-novel and cross-dataset transfer: data.classes halves, retarget(), and the metrics the pipeline writes.

The class halves follow CoCoOp's ``subsample_classes`` (KaiyangZhou/CoOp @ ff61507, ``datasets/oxford_pets.py:141-185``:
training labels sorted, ``m = ceil(n / 2)``, base = the first ``m``, novel the rest, relabelled from 0), applied after
the few-shot draw over all classes (``:44-52``); H is the harmonic mean of base and novel accuracy (CoCoOp, sec. 4.1).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST, compose
from omegaconf import open_dict

from clipft import registry
from clipft.data.samples import DatasetIndex, Sample
from clipft.data.split_policy import SplitPolicy, make_splits
from clipft.errors import CheckpointError, ConfigError
from clipft.methods.retarget import RETARGET, retarget

CLASSES = ["stop", "yield", "keep left", "no entry"]
SGD = {"_target_": "torch.optim.SGD", "lr": 1e-3}


def tiny_clip() -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": 8}}


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ the table
@pytest.mark.parametrize("name", [n for n, e in registry.entries("method").items() if e.source == "clipft"])
def test_every_registered_method_declares_how_it_scores_other_classes(name):
    assert name in RETARGET, f"add a row for {name} to clipft.methods.retarget.RETARGET (what scores an unseen class)"
    assert RETARGET[name].unseen  # said in words, for the docs


# ------------------------------------------------------------------ data.classes
def test_classes_halves_follow_cocoop_subsample_classes():
    pool = [Sample(f"/d/train/{c}-{i}.png", c) for i in range(4) for c in range(5)]
    test = [Sample(f"/d/test/{c}-{i}.png", c) for i in range(2) for c in range(5)]
    index = DatasetIndex([f"c{c}" for c in range(5)], pool, test=test, val=[Sample(f"/d/val/{c}.png", c) for c in range(5)])
    policy = dict(dedupe="none", test_view="all")
    base = make_splits(index, SplitPolicy(**policy, classes="base"))
    novel = make_splits(index, SplitPolicy(**policy, classes="novel"))
    assert base.class_names == ["c0", "c1", "c2"] and novel.class_names == ["c3", "c4"]  # m = ceil(5 / 2) = 3
    assert {s.label for s in base.train} == {0, 1, 2} and {s.label for s in novel.train} == {0, 1}  # relabelled from 0
    assert [s.path for s in novel.test] == [s.path for s in test if s.label >= 3]
    assert [s.label for s in novel.test] == [s.label - 3 for s in test if s.label >= 3]
    assert base.held_out.name == "novel" and base.held_out.class_names == novel.class_names
    assert base.held_out.test == novel.test and base.report["classes"]["held_out_test"] == 4
    assert base.report["num_classes"] == 3 and base.report["train_class_counts"] == [4, 4, 4]
    # the few-shot draw covers every class first (CoOp), so a base run's shots are the all-class draw's base part
    shots = dict(policy, shots=2, shot_seed=3, shot_sampler="coop")
    every, halved = make_splits(index, SplitPolicy(**shots)), make_splits(index, SplitPolicy(**shots, classes="base"))
    assert [s.path for s in halved.train] == [s.path for s in every.train if s.label < 3]
    with pytest.raises(ConfigError, match="data.classes='half' is not allowed"):
        SplitPolicy(classes="half")


# ------------------------------------------------------------------ retarget
def test_coop_retargeted_to_its_own_classes_gives_its_logits_and_other_classes_their_width():
    from clipft.methods import CoOp

    coop = CoOp(CLASSES, clip=tiny_clip(), optimizer=SGD, n_ctx=2, ctx_init=None, class_token_position="middle").eval()
    with torch.no_grad():
        coop.ctx.add_(torch.randn(coop.ctx.shape, generator=torch.Generator().manual_seed(1)))  # a "trained" context
        coop.prepare_for_inference()
        before = coop(images())
        same = retarget(coop, CLASSES).eval()
        same.prepare_for_inference()
        torch.testing.assert_close(same(images()), before, atol=1e-6, rtol=0)
        other = retarget(coop, ["cat", "dog", "yield"]).eval()
        other.prepare_for_inference()
        assert other(images()).shape == (3, 3) and type(other) is CoOp and other.class_names == ["cat", "dog", "yield"]
    assert torch.equal(other.ctx, coop.ctx) and coop.class_names == CLASSES  # the context moves, the original stays
    csc = CoOp(CLASSES, clip=tiny_clip(), optimizer=SGD, n_ctx=2, ctx_init=None, class_specific=True)
    with pytest.raises(ConfigError, match="class-specific CoOp context"):
        retarget(csc, ["cat", "dog"])


def test_tip_adapter_scores_an_unseen_class_zero_shot():
    from clipft.methods import TipAdapter

    tip = TipAdapter(CLASSES, clip=tiny_clip(), optimizer=SGD, alpha=2.0, beta=3.0).eval()
    generator = torch.Generator().manual_seed(2)
    tip.build_cache(torch.randn(8, tip.backbone.embed_dim, generator=generator), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    moved = retarget(tip, ["yield", "cat"]).eval()
    assert torch.equal(moved.cache_values[:, 0], tip.cache_values[:, 1]) and not moved.cache_values[:, 1].any()
    assert torch.equal(moved.cache_keys, tip.cache_keys) and float(moved.alpha) == 2.0
    with torch.no_grad():
        moved.prepare_for_inference()
        image = moved.backbone.encode_image(images())
        logits = moved(images())
        torch.testing.assert_close(logits[:, 1], moved.zeroshot_logits(image)[:, 1])  # no keys there: zero-shot
        assert not torch.allclose(logits[:, 0], moved.zeroshot_logits(image)[:, 0])  # a seen class keeps its cache


def test_a_linear_probe_keeps_its_rows_for_a_subset_and_is_zero_shot_for_new_classes():
    from clipft.methods import CLIPLinearProbe, CLIPZeroShot

    probe = CLIPLinearProbe(CLASSES, clip=tiny_clip()).eval()
    with torch.no_grad():
        probe.head.weight.normal_(generator=torch.Generator().manual_seed(3))
        subset = retarget(probe, ["no entry", "stop"])
        assert type(subset) is CLIPLinearProbe
        torch.testing.assert_close(subset(images()), probe(images())[:, [3, 0]])
        novel = retarget(probe, ["cat", "dog"])
        assert type(novel) is CLIPZeroShot and novel.class_names == ["cat", "dog"]
        assert torch.equal(novel.backbones[0].state_dict()["model.logit_scale"], probe.backbone.state_dict()["model.logit_scale"])


def test_harmonic_mean_is_cocoops_h():
    from clipft.pipeline.class_transfer import harmonic_mean

    assert harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4) and harmonic_mean(0.0, 0.0) == 0.0


def test_a_module_that_cannot_move_leaves_the_base_run_its_metrics_and_says_why():
    from types import SimpleNamespace

    from clipft.data.split_policy import ClassSet
    from clipft.methods import CoOp
    from clipft.pipeline.class_transfer import add_novel_scores

    csc = CoOp(CLASSES, clip=tiny_clip(), optimizer=SGD, n_ctx=2, ctx_init=None, class_specific=True)
    datamodule = SimpleNamespace(classes="base", held_out=ClassSet("novel", ["cat", "dog"], []))
    metrics = add_novel_scores({"summary": {}, "test": {"accuracy": 0.5}}, csc, datamodule)
    assert metrics["summary"] == {"test_accuracy_base": 0.5, "test_accuracy_novel": None, "test_hm": None}
    assert "class-specific" in metrics["test_novel"]["error"]
    untouched = add_novel_scores({"summary": {}, "test": {"accuracy": 0.5}}, csc, SimpleNamespace(classes="all", held_out=None))
    assert untouched == {"summary": {}, "test": {"accuracy": 0.5}}


def test_transfer_is_recorded_for_another_data_config_or_retargeted_classes():
    from omegaconf import OmegaConf

    from clipft.pipeline.class_transfer import transfer_summary

    report, names = {"accuracy": 0.25}, ["a", "b", "c"]
    cfg = OmegaConf.create({"ckpt_path": "run/checkpoints/best.ckpt", "data": {"_target_": "x.Y", "classes": "all"}})
    assert transfer_summary(cfg, report, names, ["data=imagenet_v2"]) == {"transfer": {"imagenet_v2": {"accuracy": 0.25, "classes": 3}}}
    assert transfer_summary(cfg, report, names, ["data.batch_size=8"]) == {}  # the checkpoint's own data: not a transfer
    assert transfer_summary(OmegaConf.create({"ckpt_path": None}), report, names, ["data=dtd"]) == {}  # zero-shot: no checkpoint
    novel = OmegaConf.create({"ckpt_path": "c.ckpt", "retarget": True, "data": {"_target_": "x.Y", "classes": "novel"}})
    assert transfer_summary(novel, report, names, []) == {"transfer": {"Y/novel": {"accuracy": 0.25, "classes": 3}}}


# ------------------------------------------------------------------ end to end
TINY = [*FAST, "trainer.max_epochs=1", "data.train_per_class=6", "data.test_per_class=3", "logger=none"]


def _plain(cfg):
    with open_dict(cfg):
        del cfg["hydra"]  # in-process: the hydra node holds values only a launched job resolves
    return cfg


def train(overrides: list[str], root) -> dict:
    from clipft.pipeline.train import run_train

    return run_train(_plain(compose([*TINY, *overrides], root=root)))


def evaluate(overrides: list[str], root) -> dict:
    from clipft.pipeline.evaluate import run_eval

    eval_fast = [o for o in TINY if not o.startswith(("trainer.max_epochs", "~callbacks"))]
    return run_eval(_plain(compose([*eval_fast, *overrides], config_name="eval", root=root)))


def test_a_base_run_writes_base_novel_and_hm_and_eval_transfers_to_the_novel_classes(tmp_path, tiny_clip_dir):
    model = ["model=clip_coop", f"model.clip.name_or_path={tiny_clip_dir}", "model.n_ctx=2", "model.ctx_init=null"]
    data = ["data=synthetic_signs", f"data.root={tmp_path / 'signs'}", "data.shots=2", "data.shot_sampler=coop"]
    metrics = train([*model, *data, "data.classes=base", "plots=false"], tmp_path / "a")
    summary = metrics["summary"]
    assert summary["test_accuracy_base"] == summary["test_accuracy"]
    base, novel = summary["test_accuracy_base"], summary["test_accuracy_novel"]
    assert summary["test_hm"] == pytest.approx(2 * base * novel / (base + novel) if base + novel else 0.0)
    assert len(metrics["test"]["per_class"]) == 5 and len(metrics["test_novel"]["per_class"]) == 5  # 10 classes halved
    run = Path(metrics["run"]["output_dir"])
    on_disk = json.loads((run / "metrics.json").read_text())["summary"]
    assert on_disk["test_hm"] == summary["test_hm"] and on_disk["test_accuracy_novel"] == novel
    split = json.loads((run / "fewshot_split.json").read_text())
    assert split["sampler"] == "coop" and len(split["train"]) == 2 * 10  # drawn over all classes, as CoOp
    ckpt = metrics["best_checkpoint"]
    with pytest.raises(CheckpointError, match="retarget=true"):
        evaluate([f"ckpt_path={ckpt}", *data, "data.classes=novel"], tmp_path / "b")
    scored = evaluate([f"ckpt_path={ckpt}", *data, "data.classes=novel", "++retarget=true"], tmp_path / "c")
    transfer = scored["summary"]["transfer"]["synthetic_signs/novel"]
    assert transfer == {"accuracy": pytest.approx(novel, abs=1e-6), "classes": 5}
    assert math.isclose(scored["summary"]["test_accuracy"], novel, abs_tol=1e-6)
