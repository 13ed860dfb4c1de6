"""Reference parity of the linear probe and of CLIP-LoRA: each reference's math, transcribed in plain
sklearn / torch below (not imported: neither reference is a package), against clipft on identical tensors.

Linear probe: CoOp's few-shot protocol, KaiyangZhou/CoOp @ ff61507c790454bce7c5052c3ac39e60772f1f89,
``lpclip/linear_probe.py:53-118`` (C sweep, then bisection) and ``lpclip/feat_extractor.py:155`` (raw
``clip_model.visual`` features); the CLIP README's example (openai/CLIP @ d05afc4, ``README.md:141-193``)
fits ``LogisticRegression(C, max_iter=1000)`` on raw ``encode_image`` features too.

LoRA: CLIP-LoRA, MaxZanella/CLIP-LoRA @ 358f0d7361f59e66c0b2d0b672a3dafb143a759b: ``run_utils.py:28-37``
(hyper-parameters), ``loralib/layers.py:42`` (scaling alpha/sqrt(r)), ``:67-68`` (A kaiming, B zero),
``:186-208`` (``W x + b + scaling * dropout(x) @ (B A)^T``), ``loralib/utils.py:107-134`` (q/k/v of every
block of both encoders), ``lora.py:73-122`` (AdamW, cosine, plain CE on ``100 * cos``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose
from omegaconf import OmegaConf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from clipft.errors import ConfigError
from clipft.methods import CLIPLinearProbe

CLASSES = ["stop", "yield", "keep left", "no entry"]
OLD_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)  # clipft's C sweep before the reference became the default


def tiny_clip(projection_dim: int = 8) -> dict:
    """A random tiny HF CLIP built in memory (no files)."""
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": projection_dim}}


# ---------------------------------------------------------------------------------------------- linear probe
def lpclip_search(x_tr, y_tr, x_va, y_va, num_step: int = 8):
    """CoOp lpclip/linear_probe.py:53-118 (@ ff61507) for one draw: ``(c_final, clf_final)``.

    ``penalty="l2"`` (line 57) is sklearn's default and deprecated as an argument in sklearn >= 1.8."""

    def fit(c):
        return LogisticRegression(solver="lbfgs", max_iter=1000, C=c).fit(x_tr, y_tr)

    def accuracy(clf):
        pred = clf.predict(x_va)
        return sum(pred == y_va) / len(y_va)

    search_list = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]  # :54
    acc_list = [accuracy(fit(c)) for c in search_list]
    c_peak = search_list[np.argmax(acc_list)]  # :65, the first maximum: the largest C of a tie
    c_left, c_right = 1e-1 * c_peak, 1e1 * c_peak  # :67
    c_final = clf_final = None
    for _ in range(num_step):  # :113-118 calling binary_search, :69-111
        clf_left, clf_right = fit(c_left), fit(c_right)
        acc_left, acc_right = accuracy(clf_left), accuracy(clf_right)
        if acc_left < acc_right:  # :81-86
            c_final, clf_final = c_right, clf_right
            c_left = 0.5 * (np.log10(c_right) + np.log10(c_left))
            c_right = np.log10(c_right)
        else:  # :87-92, a tie keeps the left (smaller) C
            c_final, clf_final = c_left, clf_left
            c_right = 0.5 * (np.log10(c_right) + np.log10(c_left))
            c_left = np.log10(c_left)
        c_left, c_right = np.power(10, c_left), np.power(10, c_right)  # :105-107
    return c_final, clf_final


def blobs(seed: int, dim: int = 8):
    """Four overlapping Gaussian classes: 6 train, 10 val, 10 test images each (float32, like clipft's features)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(CLASSES), dim))

    def draw(n):
        y = np.repeat(np.arange(len(CLASSES)), n)
        return (centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y

    return draw(6), draw(10), draw(10)


# seed 4: a tie at the top of the sweep (1e6 ... 1e2) -> the largest C; 23 and 25: the bisection moves both ways
@pytest.mark.parametrize("seed", [4, 23, 25])
def test_linear_probe_picks_the_reference_c_and_its_logits(seed):
    """Same C (exactly: the same float operations) and the same logits to 1e-5 (clipft's head is float32,
    sklearn's decision_function float64; both fits are the same deterministic L-BFGS run on float64 features,
    as the reference's np.savez of Python floats). The old behaviour (one pass over 0.1 ... 1000, ties to the
    smallest C, float32 fits) picks another C on these draws."""
    probe = CLIPLinearProbe(CLASSES, clip=tiny_clip())
    (x_tr, y_tr), (x_va, y_va), (x_te, _) = blobs(seed, probe.head.in_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c_ref, clf_ref = lpclip_search(x_tr.astype(np.float64), y_tr, x_va.astype(np.float64), y_va)
        probe.fit_head((x_tr, y_tr), (x_va, y_va))
    assert c_ref not in OLD_GRID and not any(math.isclose(c_ref, c, rel_tol=1e-6) for c in OLD_GRID)
    assert float(probe.selected_c) == c_ref
    with torch.no_grad():
        ours = probe.head(torch.from_numpy(x_te)).double().numpy()
    np.testing.assert_allclose(ours, clf_ref.decision_function(x_te.astype(np.float64)), rtol=1e-5, atol=1e-5)


def test_linear_probe_reads_raw_features_by_default_and_l2_on_request():
    """lpclip/feat_extractor.py:155 stores ``clip_model.visual(images)``: the projected, unnormalised
    embedding. The old probe always read the L2-normalised one."""
    torch.manual_seed(0)
    probe = CLIPLinearProbe(CLASSES, clip=tiny_clip()).eval()
    images, labels = torch.randn(6, 3, 32, 32), torch.arange(6) % len(CLASSES)
    feats, got = probe.extract_features([(images, labels)])
    raw = probe.backbone.encode_image(images, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(6), atol=1e-3)  # raw features really are not unit-norm
    torch.testing.assert_close(torch.from_numpy(feats), raw, rtol=0, atol=0)
    assert (got == labels.numpy()).all()
    with torch.no_grad():
        probe.head.weight.normal_()
        torch.testing.assert_close(probe(images), probe.head(raw))
        assert probe.linear_head() is None  # not a linear map of the normalised embedding: no hf/open_clip export
    l2 = CLIPLinearProbe(CLASSES, clip=tiny_clip(), feature_norm="l2", c_search="grid").eval()
    feats, _ = l2.extract_features([(images, labels)])
    np.testing.assert_allclose(np.linalg.norm(feats, axis=-1), 1.0, rtol=1e-5)
    assert l2.c_values == list(OLD_GRID) and l2.ties == "smallest" and l2.search_steps == 0
    # a probe saved before feature_norm existed (no l2_features in its state) was fitted on normalised features
    state = {k: v for k, v in probe.state_dict().items() if k != "l2_features"}
    probe.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(probe(images), probe.head(probe.backbone.encode_image(images)))
    with pytest.raises(ConfigError, match="feature_norm"):
        CLIPLinearProbe(CLASSES, clip=tiny_clip(), feature_norm="L2")


# ---------------------------------------------------------------------------------------------- CLIP-LoRA
# run_utils.py:26-37 and lora.py:75-76 @ 358f0d7
REFERENCE_LORA = {"r": 2, "alpha": 1, "dropout_rate": 0.25, "params": ["q", "k", "v"], "encoder": "both",
                  "lr": 2e-4, "weight_decay": 1e-2, "betas": (0.9, 0.999), "eta_min": 1e-6}


def paper_config() -> dict:
    return OmegaConf.to_container(compose(["model=clip_lora_paper"]).model, resolve=True)


def paper_module(**overrides):
    from clipft.methods import PEFTFineTune

    cfg = paper_config()
    cfg.pop("_target_")
    cfg.update({"clip": tiny_clip(), **overrides})
    return PEFTFineTune(CLASSES, **cfg)


def reference_scaling(r: int, alpha: float) -> float:
    return alpha / math.sqrt(r)  # loralib/layers.py:42 (the alpha / r line above it is commented out)


def test_paper_config_is_the_reference_recipe():
    cfg = paper_config()
    ad, opt, sched = cfg["adapter"], cfg["optimizer"], cfg["scheduler"]
    assert (ad["peft_type"], ad["r"], ad["lora_alpha"], ad["lora_dropout"]) == (
        "LORA", REFERENCE_LORA["r"], REFERENCE_LORA["alpha"], REFERENCE_LORA["dropout_rate"])
    assert ad["use_rslora"] is True  # peft: alpha / sqrt(r); without it alpha / r
    assert cfg["adapt_towers"] == ["image", "text"] and cfg["target_modules"] == "qkv"
    assert (cfg["sim_weight"], cfg["cls_weight"], cfg["label_smoothing"]) == (0.0, 1.0, 0.0)
    assert cfg["prompts"]["templates"] == ["a photo of a {}."]  # datasets/*.py template (the others are commented out)
    assert opt["_target_"] == "torch.optim.AdamW" and opt["lr"] == REFERENCE_LORA["lr"]
    assert opt["weight_decay"] == REFERENCE_LORA["weight_decay"] and tuple(opt["betas"]) == REFERENCE_LORA["betas"]
    assert sched["name"] == "cosine" and sched["warmup_steps"] == 0
    assert sched["min_lr_ratio"] * opt["lr"] == pytest.approx(REFERENCE_LORA["eta_min"])


def test_paper_lora_wraps_q_k_v_of_both_towers_and_computes_the_reference_layer():
    """The wrapped modules are exactly q/k/v of every block of both towers (not out_proj, as clip_lora
    does); a wrapped layer, with a non-zero B, is W x + b + alpha/sqrt(r) * dropout(x) A^T B^T in training
    (same dropout draw) and in evaluation, and its merged delta is alpha/sqrt(r) * B A (the reference's
    evaluation weights, layers.py:92)."""
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(0)
    module = paper_module()
    wrapped = sorted(n for n, m in module.backbone.named_modules() if isinstance(m, LoraLayer))
    expected = sorted(n for n, _ in module.backbone.named_modules()
                      if n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj") and ".self_attn." in n)
    layers = module.backbone.model.config.vision_config.num_hidden_layers + module.backbone.model.config.text_config.num_hidden_layers
    assert wrapped == expected and len(wrapped) == 3 * layers
    assert all("out_proj" not in n for n in wrapped) and any("vision_model" in n for n in wrapped) and any("text_model" in n for n in wrapped)

    layer = module.backbone.model.vision_model.encoder.layers[0].self_attn.q_proj
    r, alpha = REFERENCE_LORA["r"], REFERENCE_LORA["alpha"]
    assert layer.scaling["default"] == pytest.approx(reference_scaling(r, alpha), rel=1e-12)
    W, b = layer.base_layer.weight.detach(), layer.base_layer.bias.detach()
    A = layer.lora_A["default"].weight
    B = layer.lora_B["default"].weight
    assert A.shape == (r, W.shape[1]) and B.shape == (W.shape[0], r) and not B.any()  # B starts at zero (:68)
    with torch.no_grad():
        B.normal_()
    x = torch.randn(5, W.shape[1])
    s = reference_scaling(r, alpha)
    layer.train()
    torch.manual_seed(1)
    ours = layer(x)
    torch.manual_seed(1)
    ref = x @ W.T + b + (torch.nn.Dropout(REFERENCE_LORA["dropout_rate"])(x) @ (B @ A).T) * s  # layers.py:198-205
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ W.T + b + (x @ (B @ A).T) * s, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.get_delta_weight("default"), s * B @ A, rtol=1e-5, atol=1e-6)


def test_paper_lora_trains_as_the_reference_step_by_step():
    """N AdamW steps with the cosine schedule on one tiny LoRA layer (dropout off), clipft's optimizer and
    scheduler builders against lora.py:75-76 + 117-122: the gradients (which carry the scaling), the LR of
    every step and the parameters after each step agree to 1e-5 (float32)."""
    from clipft.methods.optim import build_optimizer, build_scheduler, param_groups
    from clipft.methods.peft_finetune import _inject

    cfg = paper_config()
    steps, r, alpha = 12, REFERENCE_LORA["r"], REFERENCE_LORA["alpha"]
    torch.manual_seed(0)
    owner = torch.nn.Module()
    owner.q_proj = torch.nn.Linear(8, 6)
    base_w, base_b = owner.q_proj.weight.detach().clone(), owner.q_proj.bias.detach().clone()
    _inject(owner, {**cfg["adapter"], "lora_dropout": 0.0}, ["q_proj"])
    layer = owner.q_proj
    for p in layer.base_layer.parameters():
        p.requires_grad_(False)
    lora = [(n, p) for n, p in owner.named_parameters() if "lora_" in n]
    opt_cfg = dict(cfg["optimizer"])
    groups = param_groups({"image": lora}, {}, base_lr=float(opt_cfg["lr"]), weight_decay=float(opt_cfg.pop("weight_decay")))
    optimizer = build_optimizer(opt_cfg, groups)
    scheduler = build_scheduler(cfg["scheduler"], optimizer, steps)["scheduler"]

    A = layer.lora_A["default"].weight.detach().clone().requires_grad_(True)  # the same start (kaiming, :67)
    B = torch.zeros_like(layer.lora_B["default"].weight, requires_grad=True)  # :68
    ref_opt = torch.optim.AdamW([A, B], weight_decay=REFERENCE_LORA["weight_decay"], betas=REFERENCE_LORA["betas"], lr=REFERENCE_LORA["lr"])
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, steps, eta_min=REFERENCE_LORA["eta_min"])
    s = reference_scaling(r, alpha)

    x, y = torch.randn(16, 8), torch.randint(0, 6, (16,))
    for _ in range(steps):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(ref_sched.get_last_lr()[0], rel=1e-9, abs=1e-15)
        optimizer.zero_grad()
        F.cross_entropy(layer(x), y).backward()
        ref_opt.zero_grad()
        F.cross_entropy(x @ base_w.T + base_b + (x @ (B @ A).T) * s, y).backward()
        torch.testing.assert_close(layer.lora_A["default"].weight.grad, A.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(layer.lora_B["default"].weight.grad, B.grad, rtol=1e-5, atol=1e-7)
        optimizer.step()
        scheduler.step()
        ref_opt.step()
        ref_sched.step()
        torch.testing.assert_close(layer.lora_A["default"].weight, A, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.lora_B["default"].weight, B, rtol=1e-5, atol=1e-5)
    assert B.abs().max() > 1e-3  # it did train
    assert ref_sched.get_last_lr()[0] == pytest.approx(REFERENCE_LORA["eta_min"])


def test_paper_lora_loss_is_plain_cross_entropy_over_one_prompt_per_class():
    """lora.py:94-113: CE(logit_scale * norm(image) @ norm(text("a photo of a {c}."))^T, y), no contrastive
    term. clipft's logit scale is the checkpoint's exp(logit_scale) (100 for OpenAI CLIP; main.py:22 fixes 100)."""
    torch.manual_seed(0)
    module = paper_module().eval()  # dropout off: the two passes see the same network
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        ours = module.training_step((images, labels), 0)
        bb = module.backbone
        text = bb.encode_text(**bb.tokenize([f"a photo of a {c}." for c in CLASSES]))
        text = text / text.norm(dim=-1, keepdim=True)
        image = bb.encode_image(images)
        image = image / image.norm(dim=-1, keepdim=True)
        ref = F.cross_entropy(module.logit_scale() * image @ text.t(), labels)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_qkv_targets_on_the_dual_encoder_are_the_text_attention_only(tmp_path):
    """MiniLM/BERT names them query/key/value; the MobileNet image tower has no attention: qkv on it is refused."""
    from peft.tuners.lora import LoraLayer

    from clipft.models.towers import save_tiny_text_encoder

    clip = {"_target_": "clipft.models.DualEncoderBackbone",
            "image_tower": {"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
            "text_tower": {"name_or_path": str(save_tiny_text_encoder(tmp_path / "bert")), "max_length": 16},
            "embed_dim": 16, "image_size": 32}
    with pytest.raises(ConfigError, match="qkv"):
        paper_module(clip=clip)
    module = paper_module(clip=clip, adapt_towers=["text"])
    wrapped = {n.rsplit(".", 1)[-1] for n, m in module.backbone.named_modules() if isinstance(m, LoraLayer)}
    assert wrapped == {"query", "key", "value"}
    assert not any(isinstance(m, LoraLayer) for m in module.backbone.image_tower.modules())
