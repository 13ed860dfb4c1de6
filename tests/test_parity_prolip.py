"""Reference parity of ProLIP: the reference's math, transcribed in plain torch below (not imported: the reference
is not a package), against clipft on identical tensors.

ProLIP, astra-vision/ProLIP @ b43e795cbf0b53a9b0aa83cf4f47d9755896ba6f: ``methods/ProLIP.py:30-40``
(``VisProjViT``: ``x_before_proj @ vit_proj``, the only trained tensor), ``:79`` (``MSELoss(reduction='sum')``),
``:88-89`` (``W0``: a copy of ``visual.proj``), ``:139-145`` (``lambda = 1/N``), ``:165-166``
(``Adam(lr, eps=1e-4)``, ``CosineAnnealingLR(train_epoch)``), ``:186-216`` (``100 * normalize(x @ W) @ text``,
``CE + lambda * MSE-sum(W0, W)``, step, scheduler step); ``utils.py:31-56`` (``clip_classifier``: per class
the mean of the normalised prompt embeddings, renormalised, frozen).
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose
from omegaconf import OmegaConf
from test_clip_pipeline import train

from clipft.errors import ConfigError
from clipft.methods import ContrastiveFineTune
from clipft.methods.loading import load_module
from clipft.methods.prolip import ProLIP, visual_projection

CLASSES = ["stop", "yield", "keep left", "no entry"]
TEMPLATES = ["a photo of a {}.", "a road sign: {}."]
REFERENCE = {"lr": 1e-3, "eps": 1e-4}
TINY = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": 8}}


@functools.cache
def _config(overrides: tuple[str, ...]) -> dict:
    return OmegaConf.to_container(compose(["model=clip_prolip", *overrides]).model, resolve=True)


def config(*overrides: str) -> dict:
    return copy.deepcopy(_config(overrides))


def prolip(clip: dict | None = None, **overrides) -> ProLIP:
    cfg = config("data.shots=4")
    cfg.pop("_target_")
    cfg.update({"clip": clip or TINY, **overrides})
    return ProLIP(CLASSES, **cfg)


# ------------------------------------------------------------------ the reference, transcribed
def clip_classifier(backbone, classnames, templates) -> torch.Tensor:
    """utils.py:31-56: ``(D, C)``, each column the renormalised mean of the normalised prompt embeddings."""
    weights = []
    for name in classnames:
        emb = backbone.encode_text(**backbone.tokenize([t.format(name) for t in templates]), normalize=False)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(dim=0)
        weights.append(mean / mean.norm())
    return torch.stack(weights, dim=1)


def reference_loss(x_before, proj, proj0, text_weights, target, lam):
    """ProLIP.py:188-205 (ViT: VisProjViT.forward is ``x @ vit_proj``)."""
    image = F.normalize(x_before @ proj, dim=-1)
    logits = 100.0 * image @ text_weights
    return F.cross_entropy(logits, target) + lam * torch.nn.MSELoss(reduction="sum")(proj0.view(-1), proj.view(-1))


# ------------------------------------------------------------------ tests
def test_config_is_the_reference_recipe_and_lambda_is_one_over_the_shots():
    cfg = config("data.shots=16")
    opt, sched = cfg["optimizer"], cfg["scheduler"]
    assert (cfg["reg_weight"], cfg["shots"]) == ("1/shots", 16)
    assert opt["_target_"] == "torch.optim.Adam" and (opt["lr"], opt["eps"], opt["weight_decay"]) == (REFERENCE["lr"], REFERENCE["eps"], 0.0)
    assert (sched["name"], sched["warmup_steps"], sched["min_lr_ratio"]) == ("cosine", 0, 0.0)  # CosineAnnealingLR, eta_min 0
    assert prolip().reg_weight == pytest.approx(1 / 4)
    assert prolip(reg_weight="1/shots^2").reg_weight == pytest.approx(1 / 16)
    assert prolip(reg_weight=0.3).reg_weight == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="needs the number of shots"):
        prolip(shots=None)
    with pytest.raises(ConfigError, match="reg_weight"):
        prolip(reg_weight=-1.0)


def test_only_the_visual_projection_trains_on_every_backbone_that_has_one(tmp_path):
    """HF CLIP's visual_projection.weight, open_clip's visual.proj (the reference's ``visual.proj``); SigLIP has none."""
    from clipft.models.open_clip_backbone import save_tiny_open_clip

    module = prolip()
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["backbone.model.visual_projection.weight"]
    torch.testing.assert_close(module.initial_projection, module.backbone.model.visual_projection.weight, rtol=0, atol=0)
    oc = prolip({"_target_": "clipft.models.OpenCLIPBackbone", "model_name": str(save_tiny_open_clip(tmp_path / "oc"))})
    assert [n for n, p in oc.named_parameters() if p.requires_grad] == ["backbone.model.visual.proj"]
    assert visual_projection(oc.backbone) is oc.backbone.model.visual.proj
    with pytest.raises(ConfigError, match="HFSiglipBackbone does not have"):
        prolip({"_target_": "clipft.models.HFSiglipBackbone", "name_or_path": None, "config": {}})


def test_prolip_trains_as_the_reference_step_by_step():
    """The loss of every step and the projection after it, clipft's module, optimizer and scheduler builders against
    the transcription on the same pre-projection features, class text and logit scale 100."""
    from clipft.methods.optim import build_optimizer, build_scheduler, param_groups

    torch.manual_seed(0)
    steps, lam = 8, 0.25
    module = prolip(prompts={"templates": TEMPLATES}, reg_weight=lam)
    with torch.no_grad():
        module.backbone.logit_scale.fill_(math.log(100.0))  # the reference fixes 100 (ProLIP.py:191)
    cfg = config()
    opt_cfg, sched_cfg = cfg["optimizer"], cfg["scheduler"]
    groups = param_groups(module.named_parameter_groups(), {}, base_lr=float(opt_cfg["lr"]), weight_decay=float(opt_cfg.pop("weight_decay")))
    optimizer = build_optimizer(opt_cfg, groups)
    scheduler = build_scheduler(sched_cfg, optimizer, steps)["scheduler"]

    images, labels = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    bb = module.backbone
    with torch.no_grad():
        x_before = bb.model.vision_model(pixel_values=images).pooler_output  # the saved pre-projection features
        text_weights = clip_classifier(bb, CLASSES, TEMPLATES)
    proj0 = bb.model.visual_projection.weight.detach().t().contiguous()  # HF stores proj^T
    proj = proj0.clone().requires_grad_(True)
    ref_opt = torch.optim.Adam([proj], lr=REFERENCE["lr"], eps=REFERENCE["eps"])
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, steps)
    module.train()
    for step in range(steps):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(ref_sched.get_last_lr()[0], rel=1e-9, abs=1e-15)
        optimizer.zero_grad()
        ours = module.training_step((images, labels), step)
        ours.backward()
        ref_opt.zero_grad()
        ref = reference_loss(x_before, proj, proj0, text_weights, labels, lam)
        ref.backward()
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        optimizer.step()
        scheduler.step()
        ref_opt.step()
        ref_sched.step()
        torch.testing.assert_close(bb.model.visual_projection.weight.t(), proj, rtol=1e-5, atol=1e-5)
    assert (proj - proj0).abs().max() > 1e-3  # it did train
    assert float(module.regulariser().detach()) > 0


def test_end_to_end_train_reload_and_predict(tmp_path, tiny_clip_dir):
    """train.py on the synthetic signs, few-shot (lambda = 1/shots): the checkpoint reloads as ProLIP with W0 and
    the moved projection; the inference checkpoint is a plain CLIP that predicts the same."""
    metrics = train(["model=clip_prolip", f"model.clip.name_or_path={tiny_clip_dir}", "data.shots=4", "model.optimizer.lr=5e-2",
                     "plots=false"], tmp_path)
    trained = load_module(metrics["best_checkpoint"]).eval()
    assert type(trained) is ProLIP and trained.reg_weight == pytest.approx(0.25)
    assert not torch.equal(trained.initial_projection, trained.projection())
    merged = load_module(metrics["inference_checkpoint"]).eval()
    assert type(merged) is ContrastiveFineTune and "initial_projection" not in merged.state_dict()
    x = torch.randn(4, 3, 32, 32)
    trained.prepare_for_inference()
    merged.prepare_for_inference()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), trained(x), rtol=1e-5, atol=1e-5)
