"""CLIP methods end to end through the train/eval pipelines (in-process, tiny models, synthetic signs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FAST, compose
from omegaconf import open_dict

from clipft.errors import ConfigError
from clipft.methods.loading import load_module

TINY = [*FAST, "trainer.max_epochs=1", "data.train_per_class=6", "data.test_per_class=3", "logger=none"]


def _plain(cfg):
    with open_dict(cfg):
        del cfg["hydra"]  # in-process: the hydra node holds values only a launched job resolves
    return cfg


def evaluate(overrides: list[str], root) -> dict:
    from clipft.pipeline.evaluate import run_eval

    eval_fast = [o for o in TINY if not o.startswith(("trainer.max_epochs", "~callbacks"))]
    return run_eval(_plain(compose([*eval_fast, *overrides], config_name="eval", root=root)))


def train(overrides: list[str], root) -> dict:
    from clipft.pipeline.train import run_train

    return run_train(_plain(compose([*TINY, *overrides], root=root)))


def test_zeroshot_eval_scores_each_template_set_like_a_single_run(tmp_path, tiny_clip_dir):
    model = ["model=clip_zeroshot", f"model.clip.name_or_path={tiny_clip_dir}"]
    sweep = evaluate([*model, "zeroshot.template_sets=[simple,blurry]"], tmp_path / "a")
    assert set(sweep["zeroshot"]) == {"simple", "blurry"} and sweep["zeroshot"]["blurry"]["num_templates"] == 6
    passes = sweep["feature_pass"]  # one image-tower pass: the two template sets re-read the main pass's batches
    assert passes["image_batches_computed"] > 0 and passes["image_batches_reused"] == 2 * passes["image_batches_computed"]
    on_disk = json.loads((tmp_path / "a" / "run" / "metrics.json").read_text())
    assert on_disk["zeroshot"]["simple"]["accuracy"] == sweep["zeroshot"]["simple"]["accuracy"]
    single = evaluate([*model, "prompts@model.prompts=blurry"], tmp_path / "b")
    assert single["summary"]["test_accuracy"] == pytest.approx(sweep["zeroshot"]["blurry"]["accuracy"])
    assert single["summary"]["test_ece"] == pytest.approx(sweep["zeroshot"]["blurry"]["ece"], abs=1e-6)


def test_plots_false_skips_the_figures_of_a_training_run(tmp_path):
    metrics = train(["plots=false"], tmp_path)  # the default draws them: tests/test_reports_run.py
    run_dir = Path(metrics["run"]["output_dir"])
    assert metrics["artefacts"] == {"errors": "errors.csv"} and (run_dir / "errors.csv").is_file()
    assert not (run_dir / "plots").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["summary"]["test_accuracy"] is not None


def test_eval_without_checkpoint_or_model_says_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path"):
        evaluate([], tmp_path)


@pytest.mark.slow
def test_flyp_linear_head_then_wise_ft_end_points(tmp_path, tiny_clip_dir):
    model = ["model=clip_linear_head", f"model.clip.name_or_path={tiny_clip_dir}",
             "model.optimizer.lr=1e-3", "model.scheduler.warmup_steps=1"]
    trained = train(model, tmp_path / "ft")
    ckpt = trained["best_checkpoint"]
    sweep = evaluate([f"ckpt_path={ckpt}", "wise_ft.alphas=[0,0.5,1.0]"], tmp_path / "wise")
    zeroshot = evaluate(model, tmp_path / "zs")  # the untrained model: pretrained backbone + zero-shot head
    assert sweep["wise_ft"]["1"]["accuracy"] == pytest.approx(trained["summary"]["test_accuracy"])
    assert sweep["wise_ft"]["0"]["accuracy"] == pytest.approx(zeroshot["summary"]["test_accuracy"])
    assert sweep["wise_ft"]["0"]["ece"] == pytest.approx(zeroshot["summary"]["test_ece"], abs=1e-6)


@pytest.mark.slow
def test_linear_probe_trains_one_validation_epoch_and_reloads(tmp_path, tiny_clip_dir):
    metrics = train(["model=clip_linear_probe", f"model.clip.name_or_path={tiny_clip_dir}", "trainer.max_epochs=5"], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    assert metrics["epochs_trained"] == 1  # the head is fitted before the first epoch; nothing more to do
    assert float(module.selected_c) > 0
    assert module.head.weight.abs().sum() > 0
    on_val = evaluate([f"ckpt_path={metrics['best_checkpoint']}", "split=val"], tmp_path / "val")
    assert on_val["summary"]["val_accuracy"] == pytest.approx(metrics["summary"]["best_val_acc"])


@pytest.mark.slow
def test_dual_encoder_from_towers_trains_and_reloads(tmp_path):
    from clipft.models.towers import save_tiny_text_encoder

    text_dir = save_tiny_text_encoder(tmp_path / "bert")
    metrics = train(
        ["model=clip_dual_encoder", "model.clip.image_tower.pretrained=false", f"model.clip.text_tower.name_or_path={text_dir}",
         "model.clip.image_size=32", "model.clip.embed_dim=16", "model.clip.lock_image=true"],
        tmp_path,
    )
    module = load_module(metrics["best_checkpoint"])  # weights_only load rebuilds the towers from the hparams
    assert type(module.backbone).__name__ == "DualEncoderBackbone" and module.backbone.lock_image
    # locked image tower: its (freshly initialised) BatchNorm statistics never moved during training ...
    bn = module.backbone.visual.model.features[0][1]
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) and torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    # ... while the seeded projection did train
    from clipft.models.dual_encoder import _seeded_linear

    start = _seeded_linear(module.backbone.visual.feature_dim, 16, torch.Generator().manual_seed(0)).weight
    assert not torch.allclose(start, module.backbone.visual_projection.weight)


@pytest.mark.slow
def test_ema_callback_composes_with_clip_finetuning(tmp_path, tiny_clip_dir):
    metrics = train(["callbacks=[default,ema]", f"model.clip.name_or_path={tiny_clip_dir}"], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    assert metrics["summary"]["best_val_acc"] is not None and type(module).__name__ == "ContrastiveFineTune"


@pytest.mark.slow
def test_open_clip_backend_trains_through_the_same_module(tmp_path):
    from clipft.models.open_clip_backbone import save_tiny_open_clip

    folder = save_tiny_open_clip(tmp_path / "oc")
    metrics = train(["model=clip_open_clip", f"model.clip.model_name={folder}", "model.clip.pretrained=null",
                     "model.optimizer.lr=1e-3", "model.scheduler.warmup_steps=1"], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    assert type(module.backbone).__name__ == "OpenCLIPBackbone" and module.preprocessing["image_size"] == 32


@pytest.mark.slow
def test_lpft_starts_from_the_linear_probe_it_is_given(tmp_path, tiny_clip_dir):
    clip = f"model.clip.name_or_path={tiny_clip_dir}"
    probe = train(["model=clip_linear_probe", "model.feature_norm=l2", clip], tmp_path / "lp")
    # a vanishing LR: LP-FT's model is then the probe's, so it must score exactly what the probe scored
    lpft = train(["model=clip_lpft", clip, f"model.init_head_from={probe['best_checkpoint']}",
                  "model.optimizer.lr=1e-12", "model.scheduler.warmup_steps=0"], tmp_path / "lpft")
    assert lpft["summary"]["test_accuracy"] == pytest.approx(probe["summary"]["test_accuracy"])
    assert lpft["summary"]["best_val_acc"] == pytest.approx(probe["summary"]["best_val_acc"])
