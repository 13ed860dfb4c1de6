"""Reference parity of CLIP-SVD: the reference's math, transcribed in plain torch below (not imported: the
reference is not a package), against clipft on identical tensors.

CLIP-SVD, HealthX-Lab/CLIP-SVD @ 022b1eda02df7a5a1311d0868d49874d69b0010e: ``svf_utils/svf_torch.py:11-36``
(``d_nsvd``: ``U, S, V = torch.svd(W)``, the top ``rank`` triplets, ``V`` transposed), ``:60-77``
(``SVD_Linear``: ``fc_U(fc_V(x) * vector_S)``, the bias on ``fc_U``), ``:225-230`` + ``:268-273`` (rank
``round_to_nearest(min(m, n) * 1.0, 4)``), ``train.py:86-95`` (OpenAI CLIP's packed q/k/v split into three
Linears), ``svf_utils/utils.py:24-69`` (only ``vector_S`` of q/k/v/out/MLP of the chosen blocks of both
encoders trains), ``train.py:120-167`` + ``configs/few_shot/*.yaml`` (AdamW lr 5e-4, weight decay 0.01,
betas (0.9, 0.999), ``CosineAnnealingLR(total_iters, eta_min=1e-6)`` per step, plain CE on ``100 * cos``).
"""

from __future__ import annotations

from math import floor

import pytest
import torch
import torch.nn.functional as F
from conftest import compose
from omegaconf import OmegaConf
from test_clip_pipeline import train

from clipft.errors import ConfigError
from clipft.methods import ContrastiveFineTune
from clipft.methods.clip_svd import CLIPSVD, factor_singular_values
from clipft.methods.loading import load_module

CLASSES = ["stop", "yield", "keep left", "no entry"]
REFERENCE = {"lr": 5e-4, "weight_decay": 1e-2, "betas": (0.9, 0.999), "eta_min": 1e-6}


def tiny_clip(path=None) -> dict:
    if path is not None:
        return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(path)}
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": 8}}


def paper_config() -> dict:
    return OmegaConf.to_container(compose(["model=clip_svd"]).model, resolve=True)


def svd_module(clip: dict | None = None, **overrides) -> CLIPSVD:
    cfg = paper_config()
    cfg.pop("_target_")
    cfg.update({"clip": clip or tiny_clip(), **overrides})
    return CLIPSVD(CLASSES, **cfg)


# ------------------------------------------------------------------ the reference, transcribed
def round_to_nearest(n: int, ratio: float = 1.0, base_number: int = 4) -> int:
    """svf_torch.py:268-273 (allow_rank_eq1=True, as DatafreeSVD calls it)."""
    rank = floor(floor(n * ratio) / base_number) * base_number
    return min(max(rank, 1), n)


def reference_svd_linear(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """d_nsvd (svf_torch.py:27-36) at DatafreeSVD's rank: ``fc_V.weight (r, n)``, ``vector_S (1, r)``, ``fc_U.weight (m, r)``."""
    rank = round_to_nearest(min(weight.shape))
    U, S, V = torch.svd(weight)
    return V.T[:rank, :], S[:rank].unsqueeze(0), U[:, :rank]


def reference_forward(x, fc_v, vector_s, fc_u, bias):
    """SVD_Linear.forward (svf_torch.py:73-77)."""
    return F.linear(F.linear(x, fc_v) * vector_s, fc_u, bias)


# ------------------------------------------------------------------ tests
def test_config_is_the_reference_recipe():
    cfg = paper_config()
    opt, sched = cfg["optimizer"], cfg["scheduler"]
    assert cfg["svd_towers"] == ["image", "text"] and cfg["svd_layers"] == "all"
    assert cfg["prompts"]["templates"] == ["a photo of a {}."] and cfg["label_smoothing"] == 0.0
    assert opt["_target_"] == "torch.optim.AdamW" and opt["lr"] == REFERENCE["lr"]
    assert opt["weight_decay"] == REFERENCE["weight_decay"] and tuple(opt["betas"]) == REFERENCE["betas"]
    assert sched["name"] == "cosine" and sched["warmup_steps"] == 0
    assert sched["min_lr_ratio"] * opt["lr"] == pytest.approx(REFERENCE["eta_min"])


def test_only_the_singular_values_of_every_block_linear_of_both_towers_train():
    """utils.py:39-69 with include_train_layers all: q, k, v, out and the two MLP Linears of every block, both
    towers; each trained vector is the reference's vector_S, (1, rank) at full thin rank. Not the projections,
    embeddings, norms or the temperature."""
    module = svd_module()
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    layers = {n.split(".parametrizations.")[0].removeprefix("backbone.") for n in trainable}
    expected = {n for n, m in module.backbone.named_modules()
                if n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")}
    blocks = module.backbone.model.config.vision_config.num_hidden_layers + module.backbone.model.config.text_config.num_hidden_layers
    assert layers == expected and len(layers) == 6 * blocks
    for name, s in trainable.items():
        layer = module.get_submodule(name.split(".parametrizations.")[0])
        assert s.shape == (1, round_to_nearest(min(layer.weight.shape)))
    assert module.trainable_parameters == sum(p.numel() for p in trainable.values())
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert sum(len(g["params"]) for g in decayed) == len(trainable)  # AdamW decays vector_S (train.py:125)
    with pytest.raises(ConfigError, match="svd_layers"):
        svd_module(svd_layers="top")
    assert len([p for p in svd_module(svd_layers=[1], svd_towers=["image"]).parameters() if p.requires_grad]) == 6


def test_the_loss_is_plain_cross_entropy_and_reaches_the_singular_values_of_both_towers():
    """train.py:142-158: CE(logit_scale * norm(image) @ norm(text("a photo of a {c}."))^T, y) with the text encoded
    with gradients every step, so the text tower's singular values train too (clipft's logit scale: the checkpoint's
    exp(logit_scale), 100 for OpenAI CLIP; main.py:62 fixes 100)."""
    torch.manual_seed(0)
    module = svd_module()
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = module.training_step((images, labels), 0)
    loss.backward()
    with torch.no_grad():
        bb = module.backbone
        text = bb.encode_text(**bb.tokenize([f"a photo of a {c}." for c in CLASSES]))
        image = bb.encode_image(images)
        ref = F.cross_entropy(bb.logit_scale.exp() * image @ text.t(), labels)
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert any("text_model" in n for n in grads) and any("vision_model" in n for n in grads)


def test_a_factored_layer_computes_the_reference_svd_linear():
    """At the start (s = S) the factored layer is the pretrained one and the reference's SVD_Linear; with
    changed singular values both compute fc_U(fc_V(x) * s) + b."""
    torch.manual_seed(0)
    owner = torch.nn.Module()
    owner.fc = torch.nn.Linear(12, 8)  # rank 8 = round_to_nearest(8): the full thin SVD
    w, b = owner.fc.weight.detach().clone(), owner.fc.bias.detach().clone()
    fc_v, vector_s, fc_u = reference_svd_linear(w)
    s = factor_singular_values(owner.fc, "weight", 1)
    x = torch.randn(5, 12)
    with torch.no_grad():
        torch.testing.assert_close(s, vector_s, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(owner.fc(x), x @ w.T + b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(owner.fc(x), reference_forward(x, fc_v, vector_s, fc_u, b), rtol=1e-5, atol=1e-5)
        change = 1 + torch.rand_like(s)
        s.mul_(change)
        torch.testing.assert_close(owner.fc(x), reference_forward(x, fc_v, vector_s * change, fc_u, b), rtol=1e-5, atol=1e-5)


def test_a_packed_qkv_is_factored_per_projection_as_the_reference_splits_it():
    """open_clip's nn.MultiheadAttention packs q/k/v in one in_proj_weight; the reference first splits it into three
    Linears (train.py:86-95, PlainMultiHeadAttention) and factors each: here one (3, rank) vector, one row per projection."""
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(16, 2)
    packed = attn.in_proj_weight.detach().clone()
    s = factor_singular_values(attn, "in_proj_weight", 3)
    assert s.shape == (3, 16)
    change = 1 + torch.rand(3, 16)
    with torch.no_grad():
        s.mul_(change)
    expected = []
    for i, w in enumerate(packed.chunk(3)):
        fc_v, vector_s, fc_u = reference_svd_linear(w)
        expected.append(fc_u @ torch.diag((vector_s * change[i]).squeeze(0)) @ fc_v)
    torch.testing.assert_close(attn.in_proj_weight, torch.cat(expected), rtol=1e-5, atol=1e-5)


def test_svd_trains_as_the_reference_step_by_step():
    """N AdamW steps with the cosine schedule, clipft's optimizer and scheduler builders on the config against
    train.py:125-131 + 164-167 on the reference's SVD_Linear: the LR of every step and vector_S after each step agree."""
    from clipft.methods.optim import build_optimizer, build_scheduler, param_groups

    cfg, steps = paper_config(), 12
    torch.manual_seed(0)
    owner = torch.nn.Module()
    owner.fc = torch.nn.Linear(8, 12)  # widths that are multiples of 4, as CLIP's: the reference keeps the full rank
    w, b = owner.fc.weight.detach().clone(), owner.fc.bias.detach().clone()
    owner.fc.bias.requires_grad_(False)
    s = factor_singular_values(owner.fc, "weight", 1)
    opt_cfg = dict(cfg["optimizer"])
    groups = param_groups({"image": [("fc.parametrizations.weight.original", s)]}, {}, base_lr=float(opt_cfg["lr"]),
                          weight_decay=float(opt_cfg.pop("weight_decay")))
    optimizer = build_optimizer(opt_cfg, groups)
    scheduler = build_scheduler(cfg["scheduler"], optimizer, steps)["scheduler"]

    fc_v, vector_s, fc_u = reference_svd_linear(w)
    vector_s = vector_s.clone().requires_grad_(True)
    ref_opt = torch.optim.AdamW([vector_s], weight_decay=REFERENCE["weight_decay"], betas=REFERENCE["betas"], lr=REFERENCE["lr"])
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, steps, eta_min=REFERENCE["eta_min"])
    start = vector_s.detach().clone()
    x, y = torch.randn(16, 8), torch.randint(0, 12, (16,))
    for _ in range(steps):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(ref_sched.get_last_lr()[0], rel=1e-9, abs=1e-15)
        optimizer.zero_grad()
        F.cross_entropy(owner.fc(x), y).backward()
        ref_opt.zero_grad()
        F.cross_entropy(reference_forward(x, fc_v, vector_s, fc_u, b), y).backward()
        torch.testing.assert_close(s.grad, vector_s.grad, rtol=1e-4, atol=1e-6)
        optimizer.step()
        scheduler.step()
        ref_opt.step()
        ref_sched.step()
        torch.testing.assert_close(s, vector_s, rtol=1e-5, atol=1e-5)
    assert (vector_s - start).abs().max() > 1e-3  # it did train
    assert ref_sched.get_last_lr()[0] == pytest.approx(REFERENCE["eta_min"])


def test_logits_start_as_the_pretrained_model_and_merge_back_exactly(tmp_path, tiny_clip_dir):
    """Before training the factored model is the pretrained one; after the singular values move, the merged
    plain weights (inference_export) give the unmerged logits, on HF CLIP and on open_clip (packed q/k/v)."""
    from clipft.models.open_clip_backbone import save_tiny_open_clip

    opt = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
    x = torch.randn(3, 3, 32, 32)
    open_clip = {"_target_": "clipft.models.OpenCLIPBackbone", "model_name": str(save_tiny_open_clip(tmp_path / "oc"))}
    for clip in (tiny_clip(tiny_clip_dir), open_clip):
        module = svd_module(clip).eval()
        plain = ContrastiveFineTune(CLASSES, clip=clip, optimizer=opt, sim_weight=0.0, freeze_logit_scale=True).eval()
        with torch.no_grad():
            torch.testing.assert_close(module(x), plain(x), rtol=1e-5, atol=1e-5)
            for p in module.parameters():
                if p.requires_grad:
                    p.mul_(1 + 0.5 * torch.rand_like(p))
            target, hparams, state = module.inference_export()
            assert target.endswith("ContrastiveFineTune") and not any("parametrizations" in k for k in state)
            plain.load_state_dict(state)
            torch.testing.assert_close(plain(x), module(x), rtol=1e-5, atol=1e-5)
            assert (plain(x) - ContrastiveFineTune(**hparams).eval()(x)).abs().max() > 1e-3  # it moved


def test_wise_ft_interpolates_the_weights_even_when_the_bases_signs_differ(tiny_clip_dir):
    """WiSE-FT averages state dicts; the zero-shot reference is written in the fine-tuned model's U and V, so
    alpha 0 is the pretrained model and alpha 0.5 the average of the two weights, even when a new factoring
    (another device) would give U and V other signs (simulated by flipping a singular pair here)."""
    from clipft.methods.wise_ft import wise_ft_sweep

    opt = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
    torch.manual_seed(0)
    module = svd_module(tiny_clip(tiny_clip_dir)).eval()
    plain = ContrastiveFineTune(CLASSES, clip=tiny_clip(tiny_clip_dir), optimizer=opt, sim_weight=0.0).eval()
    pretrained = {k: v.clone() for k, v in plain.state_dict().items()}
    with torch.no_grad():
        for layer in module.modules():
            if hasattr(layer, "parametrizations"):
                svd = layer.parametrizations.weight[0]
                svd.U[:, :, 0].neg_()  # (U e0)(-1) s0 (-1)(e0^T V^T): the same weight, other signs
                svd.Vh[:, 0, :].neg_()
        for p in module.parameters():
            if p.requires_grad:
                p.mul_(1 + 0.5 * torch.rand_like(p))
    finetuned = module.merged_state_dict()
    x = torch.randn(3, 3, 32, 32)
    expected = {0.0: pretrained, 0.5: {k: (pretrained[k] + finetuned[k]) / 2 if v.is_floating_point() else v
                                       for k, v in pretrained.items()}}
    with torch.no_grad():
        for alpha, model in wise_ft_sweep(module, [0.0, 0.5]):
            plain.load_state_dict(expected[alpha])
            torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)


def test_a_cnn_image_tower_is_refused_and_the_text_tower_alone_works(tmp_path):
    from clipft.models.towers import save_tiny_text_encoder

    clip = {"_target_": "clipft.models.DualEncoderBackbone",
            "image_tower": {"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
            "text_tower": {"name_or_path": str(save_tiny_text_encoder(tmp_path / "bert")), "max_length": 16},
            "embed_dim": 16, "image_size": 32}
    with pytest.raises(ConfigError, match="image tower of DualEncoderBackbone has no Linear"):
        svd_module(clip)
    module = svd_module(clip, svd_towers=["text"])
    layers = {n.split(".parametrizations.")[0].rsplit(".", 2)[-2:][-1] for n, p in module.named_parameters() if p.requires_grad}
    assert layers == {"query", "key", "value", "dense"}  # BERT's q/k/v, attention output and MLP Linears


def test_end_to_end_train_reload_and_predict(tmp_path, tiny_clip_dir):
    """train.py's pipeline on the synthetic signs: the best checkpoint reloads as CLIPSVD, the inference checkpoint
    as a plain ContrastiveFineTune, and both predict the same."""
    metrics = train(["model=clip_svd", f"model.clip.name_or_path={tiny_clip_dir}", "model.optimizer.lr=5e-2", "plots=false"],
                    tmp_path)
    trained = load_module(metrics["best_checkpoint"]).eval()
    start = CLIPSVD(**trained.hparams)
    moved = [not torch.equal(a, b) for (n, a), b in zip(trained.named_parameters(), start.parameters()) if a.requires_grad]
    assert moved and all(moved)  # every singular-value vector trained; U and V came back from the checkpoint
    merged = load_module(metrics["inference_checkpoint"]).eval()
    assert type(trained) is CLIPSVD and type(merged) is ContrastiveFineTune
    x = torch.randn(4, 3, 32, 32)
    trained.prepare_for_inference()
    merged.prepare_for_inference()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), trained(x), rtol=1e-4, atol=1e-4)
    assert metrics["summary"]["test_accuracy"] is not None
