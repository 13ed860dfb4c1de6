"""CLIP methods in-process: linear head from zero-shot, frozen zero-shot head, per-part LRs, layer
decay, linear probe, LP-FT, zero-shot ensembles and WiSE-FT's exact end points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipft.errors import CheckpointError, ConfigError
from clipft.methods import CLIPLinearProbe, CLIPZeroShot, ContrastiveFineTune, LinearHeadFineTune
from clipft.methods.layer_decay import parameter_depth
from clipft.methods.wise_ft import interpolate_state_dicts, wise_ft_sweep

CLASSES = ["stop", "yield", "keep left"]
OPT = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.0}


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def finetune(tiny_clip_dir, **kwargs) -> ContrastiveFineTune:
    return ContrastiveFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, **kwargs)


def linear_head(tiny_clip_dir, **kwargs) -> LinearHeadFineTune:
    return LinearHeadFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, **kwargs)


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_linear_head_from_zeroshot_reproduces_zeroshot_logits(tiny_clip_dir):
    text_head = finetune(tiny_clip_dir).eval()
    linear = linear_head(tiny_clip_dir).eval()
    linear.initialise_head()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(linear(x), text_head(x), atol=1e-4, rtol=1e-4)
    before = linear.head.weight.clone()
    linear.initialise_head()  # already initialised (e.g. resumed): left alone
    assert torch.equal(before, linear.head.weight)


def test_frozen_text_tower_trains_only_the_image_side(tiny_clip_dir):
    module = finetune(tiny_clip_dir, freeze_text_tower=True, sim_weight=0.0)
    text_before = [p.clone() for p in module.backbone.text_parameters()]
    image_before = [p.clone() for p in module.backbone.image_parameters()]
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    batch = (images(), torch.tensor([0, 1, 2, 0, 1, 2]))
    module.train()
    for step in range(2):
        loss = module.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert module._frozen_text_features is module.training_text_features()  # computed once, cached
    assert all(torch.equal(a, b) for a, b in zip(text_before, module.backbone.text_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(image_before, module.backbone.image_parameters()))


def test_frozen_zeroshot_head_trains_only_the_image_tower_and_starts_at_zeroshot(tiny_clip_dir):
    module = linear_head(tiny_clip_dir, freeze_head=True)
    module.on_fit_start()
    head_before = module.head.weight.clone()
    text_before = [p.clone() for p in module.backbone.text_parameters()]
    with torch.no_grad():  # epoch 0 is the zero-shot classifier
        torch.testing.assert_close(module.eval()(images()), finetune(tiny_clip_dir).eval()(images()), atol=1e-4, rtol=1e-4)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert {g["name"].split("_")[0] for g in opt.param_groups} == {"image"}
    module.train()
    loss = module.training_step((images(), torch.tensor([0, 1, 2, 0, 1, 2])), 0)
    loss.backward()
    opt.step()
    assert torch.equal(head_before, module.head.weight)
    assert all(torch.equal(a, b) for a, b in zip(text_before, module.backbone.text_parameters()))


def test_part_learning_rates_reach_the_optimizer(tiny_clip_dir):
    module = finetune(tiny_clip_dir, learning_rates={"image": 1e-4, "text": 2e-4})
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["image"] == 1e-4 and lrs["text"] == 2e-4
    assert lrs["other_no_decay"] == OPT["lr"]  # the temperature falls back to optimizer.lr
    head = linear_head(tiny_clip_dir, learning_rates={"image": 1e-4, "head": 5e-3}).configure_optimizers()
    head = head["optimizer"] if isinstance(head, dict) else head
    lrs = {g["name"]: g["lr"] for g in head.param_groups}
    assert lrs["head"] == 5e-3 and lrs["image"] == 1e-4 and "text" not in lrs  # the text tower only builds the head
    with pytest.raises(ConfigError, match="learning_rates"):
        finetune(tiny_clip_dir, learning_rates={"vision": 1e-4})


def test_layer_decay_gives_earlier_blocks_smaller_learning_rates(tiny_clip_dir):
    assert parameter_depth("model.vision_model.encoder.layers.1.mlp.fc1.weight") == 2
    assert parameter_depth("model.vision_model.embeddings.patch_embedding.weight") == 0
    assert parameter_depth("model.visual_projection.weight") is None
    module = finetune(tiny_clip_dir, layer_decay=0.5)
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    # tiny CLIP: 2 blocks -> depths 0 (embeddings), 1, 2, 3 (head side)
    assert lrs["image.depth03"] == pytest.approx(1e-3)
    assert lrs["image.depth02"] == pytest.approx(5e-4)
    assert lrs["image.depth00_no_decay"] == pytest.approx(1.25e-4)


def test_linear_probe_fits_separable_features_and_matches_sklearn(tiny_clip_dir):
    from sklearn.linear_model import LogisticRegression

    probe = CLIPLinearProbe(CLASSES, clip=clip_cfg(tiny_clip_dir), c_values=[0.01, 10.0], c_search="grid")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, probe.head.in_features)) * 3
    y = np.repeat(np.arange(3), 20)
    x = (centers[y] + rng.normal(size=(60, probe.head.in_features))).astype(np.float32)
    score = probe.fit_head((x[::2], y[::2]), (x[1::2], y[1::2]))
    assert score == 1.0 and float(probe.selected_c) in (pytest.approx(0.01), pytest.approx(10.0))
    reference = LogisticRegression(C=float(probe.selected_c), max_iter=1000).fit(x[::2], y[::2])
    ours = probe.head(torch.from_numpy(x)).argmax(-1).numpy()
    assert (ours == reference.predict(x)).all()
    assert not any(p.requires_grad for p in probe.backbone.parameters())


def test_lpft_starts_from_the_probe_head(tiny_clip_dir, tmp_path):
    probe = CLIPLinearProbe(CLASSES, clip=clip_cfg(tiny_clip_dir), feature_norm="l2")
    with torch.no_grad():
        probe.head.weight.normal_()
        probe.head.bias.normal_()
    path = tmp_path / "lp.ckpt"
    torch.save({"state_dict": probe.state_dict(), "hyper_parameters": {"class_names": CLASSES}}, path)
    module = linear_head(tiny_clip_dir, init_head_from=str(path))
    module.initialise_head()
    assert torch.equal(module.head.weight, probe.head.weight) and torch.equal(module.head.bias, probe.head.bias)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": probe.state_dict(), "hyper_parameters": {"class_names": ["a", "b", "c"]}}, other)
    with pytest.raises(CheckpointError, match="other classes"):
        linear_head(tiny_clip_dir, init_head_from=str(other)).initialise_head()


def test_zeroshot_module_matches_finetune_zeroshot_probabilities(tiny_clip_dir):
    zs = CLIPZeroShot(CLASSES, clip=clip_cfg(tiny_clip_dir)).eval()
    ft = finetune(tiny_clip_dir).eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(zs(x).softmax(-1), ft(x).softmax(-1), atol=1e-5, rtol=1e-4)


def test_ensemble_averages_member_probabilities_with_weights_and_floor(tiny_clip_dir):
    members = [
        {"clip": clip_cfg(tiny_clip_dir), "weight": 3.0},
        {"clip": clip_cfg(tiny_clip_dir), "weight": 1.0, "prompts": {"templates": ["a blurry photo of a {}."]}},
    ]
    x = images()
    ens = CLIPZeroShot(CLASSES, ensemble=members).eval()
    with torch.no_grad():
        p = ens.member_probabilities(x)
        torch.testing.assert_close(ens(x).exp(), 0.75 * p[0] + 0.25 * p[1])
        floored = CLIPZeroShot(CLASSES, ensemble=members, prob_floor=0.34).eval()
        q = torch.where(p >= 0.34, p, torch.zeros_like(p))
        mix = 0.75 * q[0] + 0.25 * q[1]
        torch.testing.assert_close(floored(x).exp(), mix / mix.sum(-1, keepdim=True), atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="weights"):
        CLIPZeroShot(CLASSES, ensemble=[{"clip": clip_cfg(tiny_clip_dir), "weight": -1.0}])


def test_interpolation_end_points_and_midpoint():
    zs = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    ft = {"w": torch.tensor([1.0, 4.0]), "n": torch.tensor(7)}
    assert torch.equal(interpolate_state_dicts(zs, ft, 0.0)["w"], zs["w"])
    assert torch.equal(interpolate_state_dicts(zs, ft, 1.0)["w"], ft["w"])
    torch.testing.assert_close(interpolate_state_dicts(zs, ft, 0.25)["w"], torch.tensor([0.25, 2.5]))
    assert int(interpolate_state_dicts(zs, ft, 0.5)["n"]) == 7  # integer buffers come from the fine-tuned model


@pytest.mark.parametrize("method", ["contrastive", "linear_head"])
def test_wise_ft_alpha_0_is_zeroshot_and_alpha_1_is_finetuned_exactly(tiny_clip_dir, method):
    tuned = finetune(tiny_clip_dir) if method == "contrastive" else linear_head(tiny_clip_dir)
    tuned.prepare_for_inference()
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))  # "fine-tuned"
    tuned.eval()
    reference = tuned.zeroshot_reference()
    x = images()
    with torch.no_grad():
        want_ft, want_zs = tuned(x).clone(), reference(x)
        got = {alpha: model(x).clone() for alpha, model in wise_ft_sweep(tuned, [0.0, 0.5, 1.0])}
        assert torch.equal(got[0.0], want_zs)
        assert torch.equal(got[1.0], want_ft)
        assert not torch.allclose(got[0.5], want_ft) and not torch.allclose(got[0.5], want_zs)
        assert torch.equal(tuned(x), want_ft)  # weights restored after the sweep
    with pytest.raises(ConfigError, match="alphas"):
        list(wise_ft_sweep(tuned, [1.5]))


def test_wise_ft_refuses_a_randomly_initialised_backbone():
    random_clip = ContrastiveFineTune(CLASSES, clip={"_target_": "clipft.models.HFCLIPBackbone", "config": {}}, optimizer=OPT)
    with pytest.raises(CheckpointError, match="randomly"):
        list(wise_ft_sweep(random_clip, [0.0, 1.0]))


def test_lpft_refuses_a_probe_fitted_on_raw_features(tmp_path):
    """LP-FT's head reads L2-normalised features: a raw-feature probe (the lpclip default) would start it wrong."""
    from clipft.errors import CheckpointError
    from clipft.methods.linear_head_finetune import probe_head_from_checkpoint

    state = {"head.weight": torch.zeros(3, 4), "head.bias": torch.zeros(3)}
    torch.save({"state_dict": {**state, "l2_features": torch.tensor(False)}, "hyper_parameters": {"class_names": CLASSES}}, tmp_path / "raw.ckpt")
    with pytest.raises(CheckpointError, match="feature_norm=l2"):
        probe_head_from_checkpoint(str(tmp_path / "raw.ckpt"), CLASSES, torch.Size([3, 4]))
    torch.save({"state_dict": {**state, "l2_features": torch.tensor(True)}, "hyper_parameters": {"class_names": CLASSES}}, tmp_path / "l2.ckpt")
    weight, _ = probe_head_from_checkpoint(str(tmp_path / "l2.ckpt"), CLASSES, torch.Size([3, 4]))
    assert weight.shape == (3, 4)


# ---------------------------------------------------------------------------- hyper-parameters and argument checks
def test_the_base_records_the_concrete_constructors_arguments(tiny_clip_dir):
    """ClassificationModule records the hparams of the outermost __init__ (subclasses do not call
    save_hyperparameters): exactly the concrete class's parameters, defaults included, as passed."""
    import inspect

    from clipft.methods import CoCoOp, CoOp, PEFTFineTune

    for module in (finetune(tiny_clip_dir, sim_weight=0.5), linear_head(tiny_clip_dir),
                   CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, n_ctx=2, ctx_init=None),
                   CoCoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, n_ctx=2, ctx_init=None),
                   PEFTFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT)):
        params = list(inspect.signature(type(module)).parameters)  # own + passes_on (ClassificationModule.passes_on)
        assert list(module.hparams) == params, type(module).__name__
        assert module.hparams["optimizer"] == OPT and module.hparams["class_names"] == CLASSES
    assert finetune(tiny_clip_dir, sim_weight=0.5).hparams["sim_weight"] == 0.5
    assert CoCoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, n_ctx=2, ctx_init=None).hparams["n_ctx"] == 2

    class Inherited(ContrastiveFineTune, abstract=True):  # no __init__ of its own: the parent's arguments
        pass

    inherited = Inherited(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=OPT, cls_weight=0.0)
    assert inherited.hparams["cls_weight"] == 0.0 and list(inherited.hparams) == list(finetune(tiny_clip_dir).hparams)
    rebuilt = type(inherited)(**dict(inherited.hparams))  # what zeroshot_reference and checkpoints do
    assert dict(rebuilt.hparams) == dict(inherited.hparams)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": {**OPT, "lr": -1.0}}, r"^optimizer\.lr=-1\.0 is not allowed: expected a positive number"),
        ({"optimizer": {**OPT, "weight_decay": -0.1}}, r"^optimizer\.weight_decay=-0\.1 is not allowed"),
        ({"label_smoothing": 1.5}, r"^label_smoothing=1\.5 is not allowed: expected a number in \[0, 1\)"),
        ({"sim_weight": -1.0}, r"^sim_weight=-1\.0 is not allowed: expected a number >= 0"),
        ({"sim_weight": 0.0, "cls_weight": 0.0}, r"^sim_weight=0\.0 \+ cls_weight=0\.0 is 0: nothing would be trained"),
    ],
)
def test_the_constructor_owns_each_check(tiny_clip_dir, kwargs, message):
    """One check per value, in the class that owns it; the pipeline runs the same check before the data scan."""
    with pytest.raises(ConfigError, match=message) as info:
        ContrastiveFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), **{"optimizer": OPT, **kwargs})
    assert "\n" not in str(info.value)
