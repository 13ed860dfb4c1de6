"""Tip-Adapter and Tip-Adapter-F against their reference implementation, on identical tensors.

Reference: github.com/gaopengcuhk/Tip-Adapter @ d0e2d6f8c5feb8b6ce937b757810761f7155d4d5 (``main.py``,
``utils.py``, ``configs/*.yaml``). The reference's math is transcribed below in plain torch (read, not
imported); the encoders are the tiny CLIP's, shared by both sides, and its temperature is set to
exp(logit_scale) = 100, the constant the reference hard-codes (main.py:32, 93), so only the method's
own arithmetic is compared.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from clipft.methods import TipAdapter

CLASSES = ["stop", "yield", "keep left"]
PROMPTS = {"templates": ["a photo of a {}.", "a road sign showing the {} symbol, seen from far away."]}
TOL = dict(atol=1e-5, rtol=0)


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def config_model(overrides: list[str] | None = None) -> dict:
    """The Tip-Adapter-F model config as train.py composes it."""
    from conftest import compose
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose(["model=clip_tip_adapter_f", *(overrides or [])]).model, resolve=True)


def make(tiny_clip_dir, optimizer=None, **kwargs) -> TipAdapter:
    cfg = config_model()
    tip = TipAdapter(CLASSES, clip=clip_cfg(tiny_clip_dir), prompts=PROMPTS, optimizer=optimizer or cfg["optimizer"],
                     scheduler=cfg["scheduler"], finetune_keys=True, **kwargs)
    with torch.no_grad():
        tip.backbone.logit_scale.fill_(math.log(100.0))  # the reference's constant 100 (clamped to exactly 100)
    return tip.eval()


# ---------------------------------------------------------------------------------------------- the reference
@torch.no_grad()
def reference_clip_classifier(tip: TipAdapter) -> torch.Tensor:
    """utils.py:18-35 (``clip_classifier``): per class, its templates' embeddings normalised, averaged,
    renormalised; ``(D, C)``."""
    weights = []
    for prompts in tip.class_prompts:
        emb = tip.backbone.encode_text(**tip.backbone.tokenize(list(prompts), device="cpu"), normalize=False).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        emb = emb.mean(dim=0)
        weights.append(emb / emb.norm())
    return torch.stack(weights, dim=1)


def reference_cache(raw_views: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """utils.py:46-62 (``build_cache_model``): the raw features of ``augment_epoch`` views averaged,
    normalised, ``(D, N)``; values one-hot (``.half()`` there; fp32 here)."""
    cache_keys = raw_views.mean(dim=0)
    cache_keys = cache_keys / cache_keys.norm(dim=-1, keepdim=True)
    return cache_keys.permute(1, 0), F.one_hot(labels, num_classes).float()


def reference_tip_logits(features, adapter_weight, cache_values, clip_weights, alpha, beta) -> torch.Tensor:
    """main.py:91-94: ``adapter(f)`` is ``f @ weight.T`` (``nn.Linear`` without bias, main.py:69-70)."""
    affinity = features @ adapter_weight.t()
    cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
    clip_logits = 100. * features @ clip_weights
    return clip_logits + cache_logits * alpha


def reference_search_grid(search_scale, search_step) -> tuple[list[float], list[float]]:
    """utils.py:103-104."""
    beta_list = [i * (search_scale[0] - 0.1) / search_step[0] + 0.1 for i in range(search_step[0])]
    alpha_list = [i * (search_scale[1] - 0.1) / search_step[1] + 0.1 for i in range(search_step[1])]
    return beta_list, alpha_list


def reference_search_hp(features, labels, adapter_weight, cache_values, clip_weights, search_scale, search_step):
    """utils.py:99-129 (``search_hp``): beta outer, alpha inner, strictly better accuracy wins."""
    beta_list, alpha_list = reference_search_grid(search_scale, search_step)
    best_acc, best_beta, best_alpha = 0, 0, 0
    for beta in beta_list:
        for alpha in alpha_list:
            tip_logits = reference_tip_logits(features, adapter_weight, cache_values, clip_weights, alpha, beta)
            acc = 100 * float((tip_logits.topk(1, 1, True, True)[1].t()[0] == labels).float().sum()) / labels.shape[0]
            if acc > best_acc:
                best_acc, best_beta, best_alpha = acc, beta, alpha
    return best_beta, best_alpha


def reference_train(cache_keys, cache_values, clip_weights, batches, *, lr, alpha, beta, epochs):
    """main.py:66-106 (``run_tip_adapter_F``): the keys are ``adapter.weight`` (raw, never renormalised),
    AdamW(lr, eps=1e-4) with torch's default betas and weight decay 0.01, ``CosineAnnealingLR`` over
    ``train_epoch * len(train_loader_F)`` stepped every iteration, CE at ``init_alpha`` / ``init_beta``."""
    weight = torch.nn.Parameter(cache_keys.t().clone())
    optimizer = torch.optim.AdamW([weight], lr=lr, eps=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(batches))
    for _ in range(epochs):
        for features, target in batches:
            tip_logits = reference_tip_logits(features, weight, cache_values, clip_weights, alpha, beta)
            loss = F.cross_entropy(tip_logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return weight.detach()


# ---------------------------------------------------------------------------------------------- shared data
@pytest.fixture(scope="module")
def data(tiny_clip_dir):
    tip = make(tiny_clip_dir)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, 32, 32, generator=gen)
    labels = torch.tensor([0, 1, 2] * 4)
    val_x = torch.randn(9, 3, 32, 32, generator=gen)
    with torch.no_grad():
        raw, val_raw = tip.backbone.encode_image(x, normalize=False), tip.backbone.encode_image(val_x, normalize=False)
    return {"x": x, "labels": labels, "features": F.normalize(raw, dim=-1), "raw": raw,
            "val_x": val_x, "val_features": F.normalize(val_raw, dim=-1)}


def test_logits_equal_the_reference(tiny_clip_dir, data):
    """utils.py:18-62 (classifier, cache) and main.py:39-42 (logits), at the configured pair, on the
    val images through ``forward``."""
    tip = make(tiny_clip_dir, alpha=2.5, beta=3.0)
    tip.build_cache(data["features"], data["labels"])
    tip.prepare_for_inference()
    keys, values = reference_cache(data["raw"][None], data["labels"], len(CLASSES))
    expected = reference_tip_logits(data["val_features"], keys.t(), values, reference_clip_classifier(tip), 2.5, 3.0)
    with torch.no_grad():
        torch.testing.assert_close(tip(data["val_x"]), expected, **TOL)


def test_keys_from_augmented_views_equal_the_reference(tiny_clip_dir, data, monkeypatch):
    """utils.py:46-60: ``augment_views: K`` averages K unnormalised views into each key, then normalises."""
    import clipft.methods.tip_adapter as module

    views = data["raw"][None] + 0.3 * torch.randn(3, *data["raw"].shape, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(module, "augmented_train_features", lambda *_: (views.reshape(-1, views.shape[-1]), data["labels"].repeat(3), 12))
    monkeypatch.setattr(module, "val_features", lambda *_: None)
    tip = make(tiny_clip_dir, augment_views=3)
    tip.trainer = SimpleNamespace(should_stop=False, datamodule=None)
    tip.on_fit_start()
    keys, values = reference_cache(views, data["labels"], len(CLASSES))
    torch.testing.assert_close(tip.cache_keys.detach(), keys.t(), **TOL)
    torch.testing.assert_close(tip.cache_values, values, **TOL)


def clipft_train(tiny_clip_dir, data, batches, *, epochs, lr, optimizer=None, **kwargs) -> TipAdapter:
    """clipft's own optimiser and schedule (configure_optimizers + build_scheduler, as Lightning steps them),
    and its training loss on the batches' images."""
    optimizer_cfg = dict(optimizer or config_model()["optimizer"], lr=lr)
    tip = make(tiny_clip_dir, optimizer=optimizer_cfg, alpha=1.17, beta=1.0, **kwargs)
    tip.build_cache(data["features"], data["labels"])
    tip.trainer = SimpleNamespace(estimated_stepping_batches=epochs * len(batches))
    configured = tip.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    tip.train()
    tip.backbone.eval()  # the frozen towers stay in eval mode (CLIPMethod.on_train_epoch_start)
    for _ in range(epochs):
        for images, target in batches:
            loss = tip.classification_loss(tip(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return tip


def batches_of(data):
    order = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    return [(data["x"][idx], data["labels"][idx]) for idx in order.split(5)]  # 5, 5, 2: the last batch is short, as drop_last=False


def test_keys_after_training_equal_the_reference(tiny_clip_dir, data):
    """main.py:66-106: the keys after 3 epochs x 3 batches of identical steps (lr 0.05 in both, so that
    the 0.01 weight decay and the keys' radial drift show above the tolerance; eps, betas, decay and
    schedule are the config's)."""
    batches = batches_of(data)
    tip = clipft_train(tiny_clip_dir, data, batches, epochs=3, lr=0.05)
    keys, values = reference_cache(data["raw"][None], data["labels"], len(CLASSES))
    with torch.no_grad():
        feature_batches = [(F.normalize(tip.backbone.encode_image(images, normalize=False), dim=-1), target) for images, target in batches]
    expected = reference_train(keys, values, reference_clip_classifier(tip), feature_batches, lr=0.05, alpha=1.17, beta=1.0, epochs=3)
    assert (expected - keys.t()).abs().max() > 1e-2  # the keys did move
    torch.testing.assert_close(tip.cache_keys.detach(), expected, **TOL)
    # inference with the trained keys, as main.py:136-139 (the searched pair stands in for best_alpha/beta)
    tip.eval().prepare_for_inference()
    with torch.no_grad():
        logits = reference_tip_logits(data["val_features"], expected, values, reference_clip_classifier(tip), float(tip.alpha), float(tip.beta))
        torch.testing.assert_close(tip(data["val_x"]), logits, **TOL)


@pytest.mark.parametrize("variant", [
    {"normalize_keys": True},  # clipft before the parity check
    {"weight_decay": 0.0},  # clipft before the parity check (no weight_decay in the config)
], ids=["renormalised-keys", "no-weight-decay"])
def test_the_parity_check_catches_each_old_variant(tiny_clip_dir, data, variant):
    """The comparison above fails when the math drifts: each of clipft's old settings ends elsewhere."""
    batches = batches_of(data)
    if "weight_decay" in variant:  # the config's optimizer without its decay
        tip = clipft_train(tiny_clip_dir, data, batches, epochs=3, lr=0.05, optimizer=dict(config_model()["optimizer"], **variant))
    else:
        tip = clipft_train(tiny_clip_dir, data, batches, epochs=3, lr=0.05, **variant)
    keys, values = reference_cache(data["raw"][None], data["labels"], len(CLASSES))
    with torch.no_grad():
        feature_batches = [(F.normalize(tip.backbone.encode_image(images, normalize=False), dim=-1), target) for images, target in batches]
    expected = reference_train(keys, values, reference_clip_classifier(tip), feature_batches, lr=0.05, alpha=1.17, beta=1.0, epochs=3)
    assert (tip.cache_keys.detach() - expected).abs().max() > 1e-4


def test_search_grid_and_choice_equal_the_reference(tiny_clip_dir, data):
    """utils.py:99-129 with ``search_scale`` / ``search_step`` (a 20 x 10 grid here; ImageNet's is [7, 3] x
    [200, 20]): the same grids, and the same (beta, alpha) picked on the val features."""
    scale, step = [7.0, 3.0], [20, 10]
    tip = make(tiny_clip_dir, search_scale=scale, search_step=step)
    beta_list, alpha_list = reference_search_grid(scale, step)
    torch.testing.assert_close(torch.tensor(tip.search_beta), torch.tensor(beta_list), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.tensor(tip.search_alpha), torch.tensor(alpha_list), atol=1e-12, rtol=0)
    # spread-out features (the random tiny CLIP's image embeddings are all alike, so every pair would tie):
    # val images are noisy copies of the cached ones, and the accuracy varies over the grid
    train = torch.randn(12, data["features"].shape[1], generator=torch.Generator().manual_seed(4))
    val = F.normalize(train + torch.randn(train.shape, generator=torch.Generator().manual_seed(5)), dim=-1)
    tip.build_cache(F.normalize(train, dim=-1), data["labels"])
    tip.search((val, data["labels"]))
    assert len(set(tip.cache_scores.values())) > 2
    keys, values = reference_cache(train[None], data["labels"], len(CLASSES))
    best_beta, best_alpha = reference_search_hp(val, data["labels"], keys.t(), values, reference_clip_classifier(tip), scale, step)
    assert (float(tip.beta), float(tip.alpha)) == pytest.approx((best_beta, best_alpha))
    assert (best_beta, best_alpha) != (beta_list[0], alpha_list[0])  # not the grid's first pair by default


def test_the_configs_are_the_reference_recipe():
    """configs/imagenet.yaml:17-31 and main.py:72-73: the defaults and the paper config."""
    from conftest import compose
    from omegaconf import OmegaConf

    default = config_model()
    assert (default["alpha"], default["beta"], default["normalize_keys"]) == (1.17, 1.0, False)
    assert default["optimizer"] == {"_target_": "torch.optim.AdamW", "lr": 1e-3, "eps": 1e-4, "weight_decay": 0.01}
    assert default["scheduler"]["name"] == "cosine" and not default["scheduler"]["warmup_steps"]
    paper = OmegaConf.to_container(compose(["model=clip_tip_adapter_f_paper"]).model, resolve=True)
    assert (paper["search_scale"], paper["search_step"], paper["augment_views"], paper["finetune_keys"]) == ([7.0, 3.0], [200, 20], 10, True)


def test_a_checkpoint_from_before_the_switch_keeps_renormalising_its_keys(tiny_clip_dir, data):
    """Keys trained under clipft's old rule (renormalised every forward) load with that rule; new ones with theirs."""
    tip = make(tiny_clip_dir)
    tip.build_cache(data["features"] * 2.0, data["labels"])  # keys of norm 2 show the difference
    with torch.no_grad():
        tip.cache_keys.mul_(2.0)
    state = tip.state_dict()
    old_state = {k: v for k, v in state.items() if k != "keys_renormalised"}
    old = make(tiny_clip_dir)
    old.load_state_dict(old_state)
    new = make(tiny_clip_dir)
    new.load_state_dict(state)
    assert old.normalize_keys and not new.normalize_keys and not bool(new.keys_renormalised)


def test_the_paper_config_trains_through_train_py(tmp_path, tiny_clip_dir):
    """clip_tip_adapter_f_paper end to end (keys from augmented views, the reference's grid), shortened."""
    from test_clip_pipeline import train

    from clipft.methods.loading import load_module

    metrics = train(["model=clip_tip_adapter_f_paper", f"model.clip.name_or_path={tiny_clip_dir}", "model.augment_views=2",
                     "model.search_step=[10,5]", "plots=false"], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    assert module.cache_keys.shape[0] == metrics["data"]["train"] and not module.normalize_keys
    assert float(module.beta) == pytest.approx(min(module.search_beta, key=lambda b: abs(b - float(module.beta))))  # a grid point
    assert float(module.alpha) == pytest.approx(min(module.search_alpha, key=lambda a: abs(a - float(module.alpha))))
