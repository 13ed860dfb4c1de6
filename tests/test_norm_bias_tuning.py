"""Norm / bias tuning: exactly the parameters the selection rule names train, as a plain-torch transcription trains them.

BitFit: benzakenelad/BitFit @ 7ead19a8350a01d5701f9e2df896a1c5b42c3723, ``glue_evaluator.py:73-82``
(``BIAS_TERMS_DICT['all'] = 'bias'``), ``:612-628`` (``_deactivate_relevant_gradients``: ``requires_grad = 'bias' in name``,
plus the task's ``classifier``: a CLIP's is the class text). LN-tuning (Qi et al. 2022): the affine
weight and bias of every LayerNorm. The loss transcribed below is CLIP's CE on ``logit_scale * cos(image, text)``
with the class text re-encoded every step.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import compose
from omegaconf import OmegaConf
from test_clip_pipeline import train

from clipft.errors import ConfigError
from clipft.methods.loading import load_module
from clipft.methods.norm_bias_tuning import NormBiasTuning

CLASSES = ["stop", "yield", "keep left"]
TINY = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": 8}}


def tuned(model: str = "clip_norm_tuning", clip: dict | None = None, **overrides) -> NormBiasTuning:
    cfg = OmegaConf.to_container(compose([f"model={model}"]).model, resolve=True)
    assert cfg.pop("_target_") == "clipft.methods.norm_bias_tuning.NormBiasTuning"
    cfg.update({"clip": clip or TINY, **overrides})
    return NormBiasTuning(CLASSES, **cfg)


def bitfit_rule(name: str) -> bool:
    return "bias" in name  # BIAS_TERMS_DICT['all'] in _deactivate_relevant_gradients


def ln_rule(backbone: torch.nn.Module, name: str) -> bool:
    owner = backbone.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(owner, torch.nn.LayerNorm)


def test_the_configs_select_layernorm_or_bias_and_exactly_those_parameters_train():
    ln, bitfit = tuned(), tuned("clip_bitfit")
    assert (ln.tune, bitfit.tune) == ("layernorm", "bias") and ln.tune_towers == ["image", "text"]
    for module, rule in ((ln, lambda n: ln_rule(ln.backbone, n)), (bitfit, bitfit_rule)):
        trainable = {n for n, p in module.backbone.named_parameters() if p.requires_grad}
        assert trainable == {n for n, _ in module.backbone.named_parameters() if rule(n) and "logit" not in n}
        assert module.trainable_parameters == sum(p.numel() for p in module.parameters() if p.requires_grad)
    blocks = 2 + 2  # tiny CLIP: 2 vision + 2 text blocks, 2 LayerNorms each, + pre/post (vision) + final (text)
    assert len({n for n, p in ln.named_parameters() if p.requires_grad}) == 2 * (2 * blocks + 3)
    assert any("q_proj.bias" in n for n, p in bitfit.named_parameters() if p.requires_grad)
    image_only = tuned(tune_towers=["image"])
    assert all("vision_model" in n for n, p in image_only.named_parameters() if p.requires_grad)
    with pytest.raises(ConfigError, match="tune="):
        tuned(tune="norm")


@pytest.mark.parametrize("model", ["clip_norm_tuning", "clip_bitfit"])
def test_training_matches_the_plain_torch_transcription_step_by_step(model):
    """3 AdamW steps (constant LR): the module's loss and every parameter after each step against a copy of the
    backbone with only the rule's parameters trainable and the loss written out; the rest never moves."""
    torch.manual_seed(0)
    module = tuned(model, scheduler=None, optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.0})
    ref = copy.deepcopy(module.backbone)
    rule = bitfit_rule if model == "clip_bitfit" else (lambda n: ln_rule(ref, n))
    for name, p in ref.named_parameters():
        p.requires_grad_(rule(name) and "logit" not in name)
    start = {n: p.detach().clone() for n, p in ref.named_parameters()}
    ref_opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    optimizer = module.configure_optimizers()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    prompts = ref.tokenize([f"a photo of a {c}." for c in CLASSES])
    module.train()
    for step in range(3):
        optimizer.zero_grad()
        ours = module.training_step((images, labels), step)
        ours.backward()
        optimizer.step()
        ref_opt.zero_grad()
        text, image = ref.encode_text(**prompts), ref.encode_image(images)
        expected = F.cross_entropy(ref.logit_scale.exp() * image @ text.t(), labels)
        expected.backward()
        ref_opt.step()
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
        for (name, mine), theirs in zip(module.backbone.named_parameters(), ref.parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5, msg=name)
    moved = {n for n, p in ref.named_parameters() if not torch.equal(p, start[n])}
    assert moved and moved == {n for n, p in ref.named_parameters() if p.requires_grad}


def test_a_cnn_image_tower_has_no_layernorm_and_bitfit_keeps_its_batchnorm_statistics(tmp_path):
    from clipft.models.towers import save_tiny_text_encoder

    clip = {"_target_": "clipft.models.DualEncoderBackbone",
            "image_tower": {"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
            "text_tower": {"name_or_path": str(save_tiny_text_encoder(tmp_path / "bert")), "max_length": 16},
            "embed_dim": 16, "image_size": 32}
    with pytest.raises(ConfigError, match="image tower of DualEncoderBackbone has no LayerNorm"):
        tuned(clip=clip)
    assert any(p.requires_grad for p in tuned(clip=clip, tune_towers=["text"]).parameters())
    module = tuned("clip_bitfit", clip=clip)
    stats = {n: b.clone() for n, b in module.named_buffers() if "running_mean" in n}
    module.train()
    module.on_train_epoch_start()
    module.training_step((torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), 0).backward()
    assert stats and all(torch.equal(stats[n], b) for n, b in module.named_buffers() if n in stats)
    grads = [n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert grads and all("bias" in n for n in grads)


def test_end_to_end_train_reload_and_predict(tmp_path, tiny_clip_dir):
    """train.py on the synthetic signs: the reloaded checkpoint differs from the pretrained model in LayerNorm
    parameters only, and predicts."""
    metrics = train(["model=clip_norm_tuning", f"model.clip.name_or_path={tiny_clip_dir}", "model.optimizer.lr=5e-2",
                     "model.scheduler.warmup_steps=0", "plots=false"], tmp_path)
    trained = load_module(metrics["best_checkpoint"]).eval()
    start = NormBiasTuning(**trained.hparams)
    changed = {n for (n, a), b in zip(trained.named_parameters(), start.parameters()) if not torch.equal(a, b)}
    assert changed and all(ln_rule(trained, n) for n in changed)
    trained.prepare_for_inference()
    with torch.no_grad():
        logits = trained(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, len(trained.class_names)) and torch.isfinite(logits).all()
