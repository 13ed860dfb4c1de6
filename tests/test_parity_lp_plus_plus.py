"""LP++ against its reference implementation, transcribed here in plain torch.

Reference: github.com/FereshteShakeri/FewShot-CLIP-Strong-Baseline @ f81054f995b060f8348d20e7306e15889b70c786
(``methods/linear_probe_p2.py``, ``methods/utils.py``, ``utils.py``, ``main.py``, ``configs/base.yaml``). The text
encoder is the transcription of ``tests/test_parity_coop.py``; LP++'s arithmetic is transcribed below (in fp32:
the reference runs in CLIP's fp16 on CUDA). clipft must match on identical tensors: the step sizes, the start, the
logits to 1e-5 and the classifier after N identical epochs to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import eigh
from test_parity_coop import ref_image_features, ref_text_encoder, ref_tokenize
from test_parity_taskres import train_reload_predict

from clipft.methods.lp_plus_plus import LPPlusPlus

CLASSES = ["stop", "yield", "keep left"]
TEMPLATES = ["a photo of a {}.", "the {} sign, seen from far away."]
SHOTS = 4
EPOCHS = 30  # three alpha steps
TOL = dict(atol=1e-5, rtol=0)


def make(tiny_clip_dir, **kwargs) -> LPPlusPlus:
    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    return LPPlusPlus(CLASSES, clip=clip, prompts={"templates": TEMPLATES}, **kwargs)


@pytest.fixture(scope="module")
def data(tiny_clip_dir):
    """Normalised features of ``SHOTS`` images per class (the tiny encoder's, plus a class signal so the probe has
    something to learn); 30 random val features with random labels, so that val accuracy moves during the fit and
    its best epoch is not the last; the reference's text classifier."""
    module = make(tiny_clip_dir).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3 * SHOTS, 3, 32, 32, generator=g)
    labels = torch.tensor([0, 1, 2] * SHOTS)
    with torch.no_grad():
        raw = module.backbone.encode_image(x).float()
    features = F.normalize(raw + 0.3 * torch.randn(3, raw.shape[1], generator=g)[labels], dim=-1)
    g = torch.Generator().manual_seed(1)
    val = (F.normalize(torch.randn(30, raw.shape[1], generator=g), dim=-1), torch.randint(0, 3, (30,), generator=g))
    return {"module": module, "x": x, "train": (features, labels), "val": val,
            "text": ref_clip_classifier(module.backbone.model, module.backbone.tokenizer)}


# ---------------------------------------------------------------------------- the reference, transcribed
@torch.no_grad()
def ref_clip_classifier(clip_model, tokenizer) -> torch.Tensor:
    """``clip_classifier`` (utils.py:35-52): per class, the templates' embeddings normalised, averaged, renormalised;
    stacked as columns, ``(d, C)``."""
    weights = []
    for name in CLASSES:
        tokens = ref_tokenize(tokenizer, [t.format(name) for t in TEMPLATES])
        emb = ref_text_encoder(clip_model, clip_model.text_model.embeddings.token_embedding(tokens), tokens)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(dim=0)
        weights.append(mean / mean.norm())
    return torch.stack(weights, dim=1)


def get_one_hot(y_s, num_classes):
    """utils.py:82-94 (fp16 there)."""
    one_hot = torch.zeros((*y_s.size(), num_classes), dtype=torch.float32)
    return one_hot.scatter_(-1, y_s.unsqueeze(-1), 1)


def compute_centroids_alpha(z_s, y_s):
    """utils.py:96-108: per class, the mean of ``z`` over the class's images."""
    one_hot = get_one_hot(y_s, num_classes=y_s.unique().size(0))
    return (one_hot * z_s / one_hot.sum(-2, keepdim=True)).sum(1)


def compute_centroids(z_s, y_s, mean=False):
    """utils.py:111-124: ``one_hot^T z``, the per-class *sums* (the division is commented out there; ``mean=True``
    is that division, to show the comparison sees it)."""
    one_hot = get_one_hot(y_s, num_classes=y_s.unique().size(0)).transpose(1, 2)
    centroids = one_hot.bmm(z_s)
    return centroids / one_hot.sum(-1, keepdim=True) if mean else centroids


def calculate_lr_alpha(features, clip_weights):
    """linear_probe_p2.py:16-22."""
    ftT = features @ clip_weights
    temp = torch.sum(torch.pow(ftT, 2), dim=0)
    return features.shape[0] / (max(temp) * 4)


def calculate_init_alpha(features, labels, shots, clip_weights):
    """linear_probe_p2.py:24-30."""
    alpha_tilde = compute_centroids_alpha((features @ clip_weights).unsqueeze(0), labels.unsqueeze(0))[0]
    alpha_tilde = alpha_tilde.double() * shots
    alpha_init = 250 / shots * alpha_tilde
    return torch.mean(alpha_init)


def calculate_lr_w(features):
    """linear_probe_p2.py:32-39 (``scipy.linalg.eigh`` of ``F^T F``)."""
    w, _ = eigh((features.T @ features).cpu().numpy())
    return (4 * features.shape[0]) / max(w)


def ref_fit(features, labels, val, text_weights, bias0, epochs=EPOCHS, mean_centroids=False, zero_alpha_grad=False):
    """``LinearProbe_P2.forward`` (linear_probe_p2.py:94-155) on extracted features: returns the classifier of the
    best val epoch (``>=``: the later one on ties; ``val=None``: the last) and the step sizes. ``zero_alpha_grad``: the variant that zeroes
    alpha's gradient after each alpha step (the reference does not: it accumulates from the first epoch)."""
    centroids = compute_centroids(features.unsqueeze(0), labels.unsqueeze(0), mean_centroids)
    classifier = torch.nn.Linear(features.shape[1], int(features.shape[0] / SHOTS), bias=True)
    classifier.weight.data = centroids[0]
    classifier.bias.data = bias0.clone()  # nn.Linear's own draw there; identical tensors here
    lr_temp = calculate_lr_w(features)
    final_init_alpha_mean = calculate_init_alpha(features, labels, SHOTS, text_weights)
    alpha_vec = (final_init_alpha_mean * torch.ones(1, int(features.shape[0] / SHOTS))).float().requires_grad_(True)
    lr_alpha = calculate_lr_alpha(features, text_weights)
    optimizer = torch.optim.SGD(classifier.parameters(), lr_temp, momentum=0.9)
    best_acc, best = 0.0, None
    for epoch in range(epochs):
        vision_logits = classifier(features)
        text_logits = features @ text_weights
        logits = vision_logits + torch.ones(features.shape[0], 1) @ alpha_vec * text_logits
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (epoch + 1) % 10 == 0:
            alpha_vec.data -= lr_alpha * alpha_vec.grad.data
            if zero_alpha_grad:
                alpha_vec.grad = None
        if val is None:  # no selection: the last epoch
            best = (classifier.weight.detach().clone(), classifier.bias.detach().clone(), alpha_vec.detach()[0].clone())
            continue
        val_features, val_labels = val
        with torch.no_grad():
            logits_val = classifier(val_features) + torch.ones(val_features.shape[0], 1) @ alpha_vec * (val_features @ text_weights)
        acc_val = np.mean(logits_val.argmax(dim=1).numpy() == val_labels.numpy()) * 100.0
        if acc_val >= best_acc:
            best_acc = acc_val
            best = (classifier.weight.detach().clone(), classifier.bias.detach().clone(), alpha_vec.detach()[0].clone())
    return best, (lr_temp, float(lr_alpha), float(final_init_alpha_mean))


def ref_logits(weight, bias, alpha, text_weights, features):
    """linear_probe_p2.py:151-153: ``classifier(f) + 1 @ alpha * (f @ T)``."""
    return features @ weight.t() + bias + torch.ones(features.shape[0], 1) @ alpha.unsqueeze(0) * (features @ text_weights)


def clipft_fit(tiny_clip_dir, data, seed=0, **kwargs):
    module = make(tiny_clip_dir, epochs=EPOCHS, **kwargs)
    torch.manual_seed(seed)
    module.fit_head(*data["train"], val=data["val"])
    torch.manual_seed(seed)  # the bias draw, as clipft makes it: U(-1/sqrt(d), 1/sqrt(d)), nn.Linear's rule
    bound = 1.0 / data["train"][0].shape[1] ** 0.5
    return module, torch.empty(len(CLASSES)).uniform_(-bound, bound)


# ---------------------------------------------------------------------------- tests
def test_text_classifier_start_and_step_sizes_equal_the_reference(tiny_clip_dir, data):
    """utils.py:35-52 (T), linear_probe_p2.py:16-39 (lr_w, lr_alpha, alpha's start), :94-97 (W = class sums)."""
    module = data["module"]
    torch.testing.assert_close(module.text_head(), data["text"].t(), **TOL)
    fitted, _ = clipft_fit(tiny_clip_dir, data)
    features, labels = data["train"]
    _, (lr_w, lr_alpha, alpha0) = ref_fit(features, labels, data["val"], data["text"], torch.zeros(3))
    assert float(fitted.step_sizes[0]) == pytest.approx(lr_w, rel=1e-5)
    assert float(fitted.step_sizes[1]) == pytest.approx(lr_alpha, rel=1e-5)
    from clipft.methods.lp_plus_plus import lp_plus_plus_init

    start = lp_plus_plus_init(features, labels, data["text"].t(), 250.0)
    torch.testing.assert_close(start["weight"], compute_centroids(features[None], labels[None])[0], **TOL)
    assert float(start["alpha"]) == pytest.approx(alpha0, rel=1e-6)


@pytest.mark.parametrize("select", ["best_val", "last"])
def test_classifier_after_training_equals_the_reference(tiny_clip_dir, data, select):
    """linear_probe_p2.py:116-155: ``EPOCHS`` full-batch SGD steps on W and b, alpha's accumulated-gradient steps
    every 10 epochs, the best val epoch kept (``last``: the last epoch's); the logits of the kept classifier, on features and through ``forward``."""
    module, bias0 = clipft_fit(tiny_clip_dir, data, select=select)
    features, labels = data["train"]
    (last_weight, _, _), _ = ref_fit(features, labels, None, data["text"], bias0)
    if select == "best_val":
        (weight, bias, alpha), _ = ref_fit(features, labels, data["val"], data["text"], bias0)
        assert (weight - last_weight).abs().max() > 1e-2  # the best val epoch is not the last: the selection is seen
    else:
        (weight, bias, alpha), _ = ref_fit(features, labels, None, data["text"], bias0)
    assert (module.weight.detach() - compute_centroids(features[None], labels[None])[0]).abs().max() > 1e-2  # trained
    torch.testing.assert_close(module.weight.detach(), weight, **TOL)
    torch.testing.assert_close(module.bias.detach(), bias, **TOL)
    torch.testing.assert_close(module.alpha.detach(), alpha, **TOL)
    val_features = data["val"][0]
    with torch.no_grad():
        expected = ref_logits(weight, bias, alpha, data["text"], val_features)
        torch.testing.assert_close(module.class_logits(val_features), expected, **TOL)
        head_w, head_b = module.linear_head()
        torch.testing.assert_close(val_features @ head_w.t() + head_b, expected, **TOL)
        x = data["x"][:4]
        image = ref_image_features(module.backbone.model, x)
        torch.testing.assert_close(module.eval()(x), ref_logits(weight, bias, alpha, data["text"], image), **TOL)


@pytest.mark.parametrize("variant", [{"mean_centroids": True}, {"zero_alpha_grad": True}, {"epochs": EPOCHS - 10}],
                         ids=["mean-centroids", "zeroed-alpha-grad", "fewer-alpha-steps"])
def test_the_parity_check_sees_each_detail(tiny_clip_dir, data, variant):
    """The comparison above fails when the math drifts: class means instead of sums, alpha's gradient zeroed
    after each alpha step, one alpha step fewer each end elsewhere."""
    module, bias0 = clipft_fit(tiny_clip_dir, data, select="last")
    features, labels = data["train"]
    (weight, _, alpha), _ = ref_fit(features, labels, None, data["text"], bias0, **variant)
    assert max(float((module.weight.detach() - weight).abs().max()), float((module.alpha.detach() - alpha).abs().max())) > 1e-3


def test_config_is_the_reference_recipe_and_arguments_are_checked(tiny_clip_dir):
    """``configs/base.yaml`` (``train_epoch: 300``), linear_probe_p2.py:116 (momentum 0.9), :138 (every 10 epochs),
    :28 (250), main.py:100-101 (one training-transform pass)."""
    from conftest import compose

    from clipft.errors import ConfigError

    model = compose(["model=clip_lp_plus_plus"]).model
    assert (model._target_, model.epochs, model.momentum, model.alpha_every, model.alpha_init_scale) == (
        "clipft.methods.lp_plus_plus.LPPlusPlus", 300, 0.9, 10, 250.0)
    assert (model.select, model.augment_views) == ("best_val", 1)
    with pytest.raises(ConfigError, match="select"):
        make(tiny_clip_dir, select="best")
    with pytest.raises(ConfigError, match="epochs"):
        make(tiny_clip_dir, epochs=0)


def test_trains_reloads_and_predicts_through_train_py(tmp_path, tiny_clip_dir):
    module, _ = train_reload_predict("clip_lp_plus_plus", tiny_clip_dir, tmp_path, ("model.epochs=20",))
    assert type(module).__name__ == "LPPlusPlus" and bool(module.fitted)
    assert float(module.step_sizes[0]) > 0 and float(module.weight.detach().abs().sum()) > 0  # the fitted classifier
