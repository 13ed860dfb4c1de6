"""CLIP-Adapter, Tip-Adapter(-F) and CLAP: each starts at zero-shot where the paper says it does,
trains only its own parameters, and runs through train.py on tiny configs."""

from __future__ import annotations

import pytest
import torch
from test_clip_pipeline import train

from clipft.methods import CLAP, CLIPAdapter, CLIPZeroShot, TipAdapter

CLASSES = ["stop", "yield", "keep left"]
OPT = {"_target_": "torch.optim.AdamW", "lr": 1e-2}


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def images(n=6, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def zeroshot(tiny_clip_dir):
    return CLIPZeroShot(CLASSES, clip=clip_cfg(tiny_clip_dir)).eval()


def test_tip_adapter_with_alpha_0_is_zero_shot_and_the_cache_sharpens_with_beta(tiny_clip_dir):
    tip = TipAdapter(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, alpha=0.0).eval()
    x, labels = images(), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        tip.build_cache(tip.backbone.encode_image(x), labels)
        torch.testing.assert_close(tip(x).softmax(-1), zeroshot(tiny_clip_dir)(x).softmax(-1), atol=1e-5, rtol=1e-4)
        tip.alpha.fill_(100.0)  # the cache dominates and, sharpened, each training image is its own nearest key
        tip.beta.fill_(1000.0)
        assert (tip(x).argmax(-1) == labels).all()
        tip.search((tip.backbone.encode_image(x), labels))
    assert tip.cache_scores and float(tip.alpha) in tip.search_alpha


def test_clip_adapter_with_ratio_0_is_zero_shot_and_only_the_adapter_trains(tiny_clip_dir):
    still = CLIPAdapter(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, ratio=0.0).eval()
    with torch.no_grad():
        torch.testing.assert_close(still(images()).softmax(-1), zeroshot(tiny_clip_dir)(images()).softmax(-1), atol=1e-5, rtol=1e-4)
    adapter = CLIPAdapter(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, ratio=0.5)
    opt = adapter.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in adapter.adapter.parameters()}


def test_clap_starts_at_zero_shot_and_holds_confident_classes_near_their_prototype(tiny_clip_dir):
    clap = CLAP(CLASSES, clip=clip_cfg(tiny_clip_dir), epochs=60).eval()
    clap.prepare_for_inference()
    x, labels = images(12), torch.tensor([0, 1, 2] * 4)
    with torch.no_grad():
        torch.testing.assert_close(clap(x).softmax(-1), zeroshot(tiny_clip_dir)(x).softmax(-1), atol=1e-5, rtol=1e-4)
        feats = clap.backbone.encode_image(x).float()
        probs = (clap.logit_scale() * feats @ clap.frozen_class_text().float().t()).softmax(-1)
    penalty = clap.class_penalty(feats, labels)
    torch.testing.assert_close(penalty[1], probs[labels == 1, 1].mean())  # hand-computed lambda for one class
    losses = clap.fit_weight(feats, labels)
    assert losses[-1] < losses[0] and bool(clap.fitted)
    free = CLAP(CLASSES, clip=clip_cfg(tiny_clip_dir), epochs=60, constraint="none")
    free.fit_weight(feats, labels)
    anchors = clap.frozen_class_text().float()
    assert (clap.weight - anchors).norm() < (free.weight - anchors).norm()  # the constraint holds the weights back


@pytest.mark.parametrize("model", ["clip_tip_adapter", "clip_tip_adapter_f", "clip_clap", "clip_adapter", "clip_coop", "clip_cocoop"])
def test_each_adapter_trains_evaluates_and_reloads_through_train_py(tmp_path, tiny_clip_dir, model):
    from clipft.methods.loading import load_module

    overrides = [f"model={model}", f"model.clip.name_or_path={tiny_clip_dir}"]
    if model == "clip_coop":
        overrides.append("model.ctx_init=null")
        overrides.append("model.n_ctx=2")
    metrics = train(overrides, tmp_path)
    assert metrics["summary"]["test_accuracy"] is not None
    module = load_module(metrics["best_checkpoint"])
    if model.startswith("clip_tip"):
        assert module.cache_keys.shape[0] == metrics["data"]["train"]  # the cache travels with the checkpoint


def test_tip_adapter_f_trains_at_the_configured_pair_and_infers_with_the_searched_one(tiny_clip_dir):
    tip = TipAdapter(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, alpha=50.0, beta=1000.0, finetune_keys=True)
    x, labels = images(), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        tip.build_cache(tip.backbone.encode_image(x), labels)
        tip.alpha.fill_(0.0)  # as if the search on val had chosen zero-shot
        assert (tip.train()(x).argmax(-1) == labels).all()  # the configured, cache-dominated pair
        torch.testing.assert_close(tip.eval()(x).softmax(-1), zeroshot(tiny_clip_dir)(x).softmax(-1), atol=1e-5, rtol=1e-4)


def test_tip_adapter_f_best_checkpoint_carries_a_searched_pair(tmp_path, tiny_clip_dir):
    """The search once ran after training only, and test reloaded the best checkpoint with the initial pair."""
    from clipft.methods.loading import load_module

    grid_alpha, grid_beta = [0.0, 3.0], [1.0, 9.0]
    metrics = train([
        "model=clip_tip_adapter_f", f"model.clip.name_or_path={tiny_clip_dir}", "model.alpha=0.7", "model.beta=2.2",
        f"model.search_alpha={grid_alpha}", f"model.search_beta={grid_beta}",
    ], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    assert float(module.alpha) in grid_alpha and float(module.beta) in grid_beta
    assert (module.hparams.alpha, module.hparams.beta) == (0.7, 2.2)  # training's pair is kept for a resume


def test_tip_adapter_f_resumed_matches_an_uninterrupted_run(tmp_path, tiny_clip_dir):
    """A resume once rebuilt the cache from the data (setup() sized an empty cache before the weights were
    restored), so the trained keys were lost; and the resumed run must search its pair again on val."""
    from pathlib import Path

    from clipft.methods.loading import load_module

    grid = ["model.search_alpha=[0.0,3.0]", "model.search_beta=[1.0,9.0]", "model.alpha=0.7", "model.beta=2.2"]
    # a constant rate: a cosine schedule spans max_epochs, which the resume raises from 1 to 2
    base = ["model=clip_tip_adapter_f", f"model.clip.name_or_path={tiny_clip_dir}", *grid, "model.scheduler.name=constant", "trainer.deterministic=true"]

    def last_of(metrics):
        return Path(metrics["run"]["output_dir"]) / "checkpoints" / "last.ckpt"

    straight = load_module(str(last_of(train([*base, "trainer.max_epochs=2"], tmp_path / "straight"))))
    last = last_of(train(base, tmp_path / "split"))
    state = torch.load(last, map_location="cpu", weights_only=True)
    state["state_dict"]["alpha"].fill_(0.7)  # off the grid: only a search after the resume can put it back
    torch.save(state, last)
    resumed_metrics = train([*base, f"ckpt_path={last}", "trainer.max_epochs=2"], tmp_path / "split")  # the same run, continued
    assert resumed_metrics["epochs_trained"] == 2 and resumed_metrics["summary"]["test_accuracy"] is not None
    resumed = load_module(str(last))  # written by the resumed epoch
    torch.testing.assert_close(resumed.cache_keys, straight.cache_keys)
    assert (float(resumed.alpha), float(resumed.beta)) == (float(straight.alpha), float(straight.beta))
    assert float(resumed.alpha) in (0.0, 3.0)
