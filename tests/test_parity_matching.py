"""Parity: methods that match their reference implementation, checked on identical tensors.

clipft's policy is "a method is its reference". Each test below transcribes the reference's
math in plain torch (read from the reference repository at the commit named in its docstring,
not copied into clipft) and compares it with clipft's implementation on the same seeded inputs
of a tiny random CLIP: outputs (and, where the method trains, gradients / parameters after a
few identical steps) agree to 1e-5.

References read (commit, file:line):

* CLIP-Adapter  github.com/gaopengcuhk/CLIP-Adapter @ 08d07f8b2ecafc6f1479fe636b26d464d7a5574e
* FLYP          github.com/locuslab/FLYP @ 215d5bb6feeda6675f60e5818abcb4f6465c83af
* WiSE-FT       github.com/mlfoundations/wise-ft @ 58b7a4b343b09dc06606aa929c2ef51accced8d1
* CLIP notebook github.com/openai/CLIP @ d05afc436d78f1c48dc0dbf8e5980a9d471f35f6
* model soups   github.com/mlfoundations/model-soups @ d5398f181ea51c5cd9d95ebacc6ea7132bb108ec
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipft.methods import CLIPAdapter, CLIPZeroShot, ContrastiveFineTune, LinearHeadFineTune
from clipft.methods.losses import contrastive_loss
from clipft.methods.wise_ft import interpolate_state_dicts, wise_ft_sweep
from clipft.methods.zeroshot_head import zeroshot_weights
from clipft.pipeline.soup import average_state_dicts

CLASSES = ["stop", "yield", "keep left"]
# templates of different lengths, so batched prompts are padded differently on the two sides
TEMPLATES = ["a photo of a {}.", "a blurry road sign: {}", "{}", "a close-up photo of the traffic sign showing {}, on a pole."]
TOL = {"atol": 1e-5, "rtol": 1e-5}


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def raw_text(backbone, texts: list[str]) -> torch.Tensor:
    """The text tower's output before any normalisation (what CLIP's ``model.encode_text`` returns)."""
    return backbone.encode_text(**backbone.tokenize(texts), normalize=False)


def perturb(module: nn.Module, seed: int, scale: float = 0.05) -> None:
    """Stand-in for fine-tuning: seeded noise on every floating tensor of the state dict."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if torch.is_floating_point(tensor):
                tensor.add_(scale * torch.randn(tensor.shape, generator=g, dtype=tensor.dtype))


# ---------------------------------------------------------------------------------------------
# CLIP-Adapter
# ---------------------------------------------------------------------------------------------


class ReferenceAdapter(nn.Module):
    """CLIP-Adapter's ``Adapter`` (clip_adapter.py:55-67): c_in -> c_in // reduction -> c_in, ReLU after
    each layer, no biases."""

    def __init__(self, c_in: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(c_in, c_in // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(c_in // reduction, c_in, bias=False),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def reference_clip_adapter_logits(backbone, adapter: nn.Module, x: torch.Tensor, prompts: list[str], ratio: float) -> torch.Tensor:
    """``CustomCLIP.forward`` (clip_adapter.py:100-115): the adapter reads the image encoder's raw
    (un-normalised) output; ``ratio * A(f) + (1 - ratio) * f``; both sides L2-normalised;
    ``logit_scale.exp() * image @ text.T``. The text is one template per class (TextEncoder, :79-86)."""
    image_features = backbone.encode_image(x, normalize=False)
    a = adapter(image_features)
    image_features = ratio * a + (1 - ratio) * image_features
    text_features = raw_text(backbone, prompts)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return backbone.logit_scale.exp() * image_features @ text_features.t()


def test_clip_adapter_matches_the_reference_forward_and_three_sgd_steps(tiny_clip_dir):
    """CLIP-Adapter vs github.com/gaopengcuhk/CLIP-Adapter @ 08d07f8b, clip_adapter.py.

    Reference math: Adapter = Linear(c_in, c_in//4, bias=False) -> ReLU -> Linear(c_in//4, c_in,
    bias=False) -> ReLU (:55-67, built as ``Adapter(1024, 4)`` at :97); forward (:100-115):
    ``ratio * adapter(f) + (1 - ratio) * f`` with ratio 0.2 (:104-105) on the raw image feature
    ``f``, then normalise image and text (:109-110), ``logit_scale.exp() * img @ txt.T`` (:112-113);
    only the adapter trains (:134-136, :144) under ``F.cross_entropy(output, label)`` (:155-159).

    clipft feeds the adapter the *normalised* image feature. The MLP has no bias and ReLU is
    positively homogeneous, so ``A(c f) = c A(f)`` for ``c > 0`` and the blend only rescales;
    after the final normalisation the logits, and hence the gradients, are the same. This test
    checks that on the raw feature, as the reference computes it.

    Compared: logits (1e-5) and both adapter weight matrices after 3 identical SGD steps
    (momentum 0.9, dassl's default SGD) on one seeded batch (1e-5).
    """
    ratio, lr, steps = 0.2, 5.0, 3
    template = "a photo of a {}."
    module = CLIPAdapter(
        CLASSES, clip=clip_cfg(tiny_clip_dir), prompts={"templates": [template]},
        optimizer={"_target_": "torch.optim.SGD", "lr": lr, "momentum": 0.9, "weight_decay": 0.0},
        ratio=ratio, reduction=4,
    )
    module.train()
    module.on_train_epoch_start()  # frozen towers in eval mode, as in a fit
    backbone = module.backbone
    dim = int(backbone.embed_dim)
    ref = ReferenceAdapter(dim, 4)
    assert [tuple(p.shape) for p in ref.parameters()] == [tuple(p.shape) for p in module.adapter.parameters()]
    with torch.no_grad():  # identical start
        ref.fc[0].weight.copy_(module.adapter[0].weight)
        ref.fc[2].weight.copy_(module.adapter[2].weight)
    prompts = [template.format(c) for c in CLASSES]
    x, labels = images(8, seed=1), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])

    with torch.no_grad():
        torch.testing.assert_close(module(x), reference_clip_adapter_logits(backbone, ref, x, prompts, ratio), **TOL)

    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    ref_optimizer = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9)
    start = module.adapter[2].weight.detach().clone()
    for step in range(steps):
        optimizer.zero_grad()
        module.training_step((x, labels), step).backward()
        optimizer.step()
        ref_optimizer.zero_grad()
        F.cross_entropy(reference_clip_adapter_logits(backbone, ref, x, prompts, ratio), labels).backward()
        ref_optimizer.step()
        torch.testing.assert_close(module.adapter[0].weight, ref.fc[0].weight, **TOL)
        torch.testing.assert_close(module.adapter[2].weight, ref.fc[2].weight, **TOL)
    assert (module.adapter[2].weight - start).abs().max() > 1e-3  # the steps moved the adapter
    assert all(p.grad is None or not p.requires_grad for p in backbone.parameters())  # towers frozen
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference_clip_adapter_logits(backbone, ref, x, prompts, ratio), **TOL)


# ---------------------------------------------------------------------------------------------
# FLYP
# ---------------------------------------------------------------------------------------------


def reference_flyp_clip_loss(image_features, text_features, logit_scale, ground_labels=None, ignore=False):
    """``ClipLoss.forward`` of FLYP's clip/loss.py (world_size 1), transcribed.

    * no labels (:193-208, what flyp_loss.py:59-64,103-105 trains with): targets ``arange``;
    * ``ground_labels`` (:187-191): soft targets ``equal / equal.sum(1)`` for both directions;
    * ``ground_labels, ignore=True`` (:131-158): off-diagonal same-class pairs dropped from both
      softmaxes, ``-log(diag / row sum)`` averaged, the two directions halved.
    """
    logits_per_image = logit_scale * image_features @ text_features.T  # :116
    logits_per_text = logit_scale * text_features @ image_features.T  # :117
    n = logits_per_image.shape[0]
    if ground_labels is None:
        labels = torch.arange(n)
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    equal = (ground_labels.view(1, -1).repeat(n, 1) == ground_labels.view(-1, 1)).float()
    if ignore:
        eye = torch.eye(n)
        labels = eye - 100 * (equal - eye)
        img = torch.exp(logits_per_image - logits_per_image.max(dim=1, keepdim=True).values) * (labels != -100)
        txt = torch.exp(logits_per_text - logits_per_text.max(dim=1, keepdim=True).values) * (labels != -100)
        img = -torch.log(torch.diagonal(img) / img.sum(dim=1))
        txt = -torch.log(torch.diagonal(txt) / txt.sum(dim=1))
        return (img.mean() + txt.mean()) / 2
    labels = equal / equal.sum(dim=1).view(-1, 1)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def test_flyp_step_loss_and_gradients_match_the_reference(tiny_clip_dir):
    """FLYP vs github.com/locuslab/FLYP @ 215d5bb6.

    Reference math: each image is paired with a class-prompt caption (the CSV of templates x
    class names); ``CLIP.forward`` (clip/model.py:363-378) normalises both features and returns
    ``logit_scale.exp()``; ``ClipLoss(local_loss=False, world_size=1)`` (src/models/flyp_loss.py:
    59-64) is called without labels (:103-105), i.e. clip/loss.py:116-117 logits and :193-208
    ``(CE(logits_per_image, arange) + CE(logits_per_text, arange)) / 2``; every CLIP parameter
    trains, logit_scale included (:66-69).

    clipft's ContrastiveFineTune with ``sim_weight=1, cls_weight=0, contrastive_target=arange``
    (each image paired with its class's first prompt) is that loss. Compared: the loss of one
    ``training_step`` (1e-5) and its gradient w.r.t. every trainable parameter, towers and
    logit_scale (1e-5), on a batch with repeated classes.
    """
    template = "a photo of a {}."
    module = ContrastiveFineTune(
        CLASSES, clip=clip_cfg(tiny_clip_dir), prompts={"templates": [template, "a sign: {}"]},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-5},
        sim_weight=1.0, cls_weight=0.0, contrastive_target="arange",
    )
    module.train()
    backbone = module.backbone
    params = [p for p in module.parameters() if p.requires_grad]
    assert any(p is backbone.logit_scale for p in params)
    x, labels = images(6, seed=2), torch.tensor([0, 1, 2, 0, 2, 2])

    loss = module.training_step((x, labels), 0)
    grads = torch.autograd.grad(loss, params, allow_unused=True)

    captions = [template.format(CLASSES[int(y)]) for y in labels]  # one caption per image
    image_features = backbone.encode_image(x, normalize=False)
    text_features = raw_text(backbone, captions)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    ref_loss = reference_flyp_clip_loss(image_features, text_features, backbone.logit_scale.exp())
    ref_grads = torch.autograd.grad(ref_loss, params, allow_unused=True)

    torch.testing.assert_close(loss, ref_loss, **TOL)
    checked = 0
    for p, got, want in zip(params, grads, ref_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, **TOL)
            checked += 1
            if p is backbone.logit_scale:
                assert float(got.abs()) > 0  # the temperature trains, as in FLYP
    assert checked > 10


@pytest.mark.parametrize(
    ("mode", "reference_kwargs"),
    [("arange", {}), ("multi_positive", {"ignore": False}), ("mask_same_class", {"ignore": True})],
)
def test_contrastive_target_modes_match_flyp_clip_loss_branches(mode, reference_kwargs):
    """clipft/methods/losses.py ``contrastive_loss`` vs FLYP's clip/loss.py ``ClipLoss`` @ 215d5bb6.

    ``arange`` is the loss FLYP trains with (no labels, :193-208); ``multi_positive`` is its
    ``ground_labels`` branch (soft targets over same-class columns, :187-191); ``mask_same_class``
    its ``ignore=True`` branch (same-class negatives dropped, :131-158). Compared: loss and its
    gradient w.r.t. both feature matrices (1e-5), seeded normalised features, repeated classes.
    """
    g = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(7, 16, generator=g), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(7, 16, generator=g), dim=-1).requires_grad_()
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    scale = torch.tensor(14.3)
    got = contrastive_loss(image, text, labels, scale, mode)
    want = reference_flyp_clip_loss(image, text, scale, None if mode == "arange" else labels, **reference_kwargs)
    torch.testing.assert_close(got, want, **TOL)
    for a, b in zip(torch.autograd.grad(got, [image, text]), torch.autograd.grad(want, [image, text])):
        torch.testing.assert_close(a, b, **TOL)


# ---------------------------------------------------------------------------------------------
# WiSE-FT
# ---------------------------------------------------------------------------------------------


def reference_wise_ft_merge(alpha: float, theta_0: dict, theta_1: dict) -> dict:
    """wise-ft src/wise_ft.py:15-21 (``fishers is None``): every key, head included."""
    return {key: (1 - alpha) * theta_0[key] + alpha * theta_1[key] for key in theta_0}


def test_wise_ft_interpolates_every_weight_as_the_reference(tiny_clip_dir):
    """WiSE-FT vs github.com/mlfoundations/wise-ft @ 58b7a4b3, src/wise_ft.py.

    Reference math: ``theta = (1 - alpha) * theta_0 + alpha * theta_1`` for every key of the
    full ImageClassifier state dict (:15-21), image encoder and classification head alike
    (:65-68), after checking both have the same keys (:80); loaded into the fine-tuned model (:89).

    clipft: ``interpolate_state_dicts`` on the fine-tuned LinearHeadFineTune's state and its
    ``zeroshot_reference()`` (pretrained backbone, zero-shot head). Compared for alpha in
    {0, 0.3, 0.5, 0.8, 1}: every floating tensor, head included (1e-5), and the logits of the
    model ``wise_ft_sweep`` yields against a copy loaded with the reference's theta (1e-5).
    Integer buffers (clipft takes them from the fine-tuned model; the reference blends them in
    float and load_state_dict casts back) must be equal in both models, so both give that value.
    """
    tuned = LinearHeadFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3})
    tuned.prepare_for_inference()
    perturb(tuned, seed=4)
    tuned.eval()
    theta_1 = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
    theta_0 = {k: v.detach().clone() for k, v in tuned.zeroshot_reference().state_dict().items()}
    assert set(theta_0) == set(theta_1)
    assert {"head.weight", "head.bias"} <= set(theta_1)
    assert not torch.allclose(theta_0["head.weight"], theta_1["head.weight"])
    x = images(4, seed=5)
    alphas = [0.0, 0.3, 0.5, 0.8, 1.0]
    reference_model = copy.deepcopy(tuned)
    swept = {}
    with torch.no_grad():
        for alpha, model in wise_ft_sweep(tuned, alphas):
            swept[alpha] = model(x).clone()
        for alpha in alphas:
            ours = interpolate_state_dicts(theta_0, theta_1, alpha)
            theirs = reference_wise_ft_merge(alpha, theta_0, theta_1)
            assert set(ours) == set(theirs)
            for key, want in theirs.items():
                if torch.is_floating_point(theta_1[key]):
                    torch.testing.assert_close(ours[key], want, **TOL, msg=f"{key} at alpha={alpha}")
                else:
                    assert torch.equal(theta_0[key], theta_1[key]), key
                    assert torch.equal(ours[key], want.round().to(theta_1[key].dtype)), key
            reference_model.load_state_dict(theirs)
            torch.testing.assert_close(swept[alpha], reference_model(x), **TOL)


# ---------------------------------------------------------------------------------------------
# Prompt-ensembled zero-shot head
# ---------------------------------------------------------------------------------------------


def reference_zeroshot_classifier(backbone, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb, ``zeroshot_classifier`` (cell 15,
    raw .ipynb lines 966-978): per class, encode its templates as one batch, normalise each
    embedding (:973), mean (:974), renormalise (:975); stacked ``dim=1`` -> ``(dim, classes)`` (:977)."""
    weights = []
    for classname in classnames:
        texts = [template.format(classname) for template in templates]
        class_embeddings = raw_text(backbone, texts)
        class_embeddings = class_embeddings / class_embeddings.norm(dim=-1, keepdim=True)
        class_embedding = class_embeddings.mean(dim=0)
        class_embedding = class_embedding / class_embedding.norm()
        weights.append(class_embedding)
    return torch.stack(weights, dim=1)


def test_prompt_ensemble_zero_shot_head_matches_the_clip_notebook(tiny_clip_dir):
    """Zero-shot head vs github.com/openai/CLIP @ d05afc43, notebooks/Prompt_Engineering_for_ImageNet.ipynb.

    Reference math (``zeroshot_classifier``, cell 15, .ipynb lines 966-978): per class, encode the
    templates, L2-normalise each, average, L2-normalise the mean; the classifier is
    ``(dim, classes)`` and logits are ``100. * image_features @ zeroshot_weights`` on normalised
    image features (.ipynb line 1063; 100 = the OpenAI checkpoints' ``exp(logit_scale)``, so the
    transcription uses the tiny model's ``logit_scale.exp()``).

    clipft: ``zeroshot_head.zeroshot_weights`` (``(classes, dim)``, all prompts in one padded
    batch), the head CLIPZeroShot classifies with (its ``forward`` gives log-probabilities) and
    the head every fine-tuning method starts from (``CLIPMethod.class_text_features``, logits
    from ``forward``). Compared (1e-5): the head (transposed), the zero-shot log-probabilities and
    the fine-tuning module's logits, with templates of different token lengths.
    """
    zeroshot = CLIPZeroShot(CLASSES, clip=clip_cfg(tiny_clip_dir), prompts={"templates": TEMPLATES}).eval()
    finetune = ContrastiveFineTune(
        CLASSES, clip=clip_cfg(tiny_clip_dir), prompts={"templates": TEMPLATES}, optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-5}
    ).eval()
    backbone = zeroshot.backbones[0]
    x = images(5, seed=6)
    with torch.no_grad():
        want = reference_zeroshot_classifier(backbone, CLASSES, TEMPLATES)
        per_class = [[t.format(c) for t in TEMPLATES] for c in CLASSES]
        got = zeroshot_weights(backbone, per_class, "cpu")
        assert got.shape == (len(CLASSES), int(backbone.embed_dim))
        torch.testing.assert_close(got, want.t(), **TOL)
        torch.testing.assert_close(zeroshot.heads()[0], want.t(), **TOL)
        torch.testing.assert_close(finetune.class_text_features(), want.t(), **TOL)
        image_features = backbone.encode_image(x, normalize=False)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        ref_logits = backbone.logit_scale.exp() * image_features @ want
        torch.testing.assert_close(zeroshot(x), ref_logits.log_softmax(-1), **TOL)
        finetune.prepare_for_inference()
        torch.testing.assert_close(finetune(x), ref_logits, **TOL)


# ---------------------------------------------------------------------------------------------
# Uniform model soup
# ---------------------------------------------------------------------------------------------


def reference_uniform_soup(state_dicts: list[dict]) -> dict:
    """model-soups main.py:113-123: the soup accumulated one ingredient at a time as
    ``v * (1 / NUM_MODELS)`` summed over the ingredients."""
    num_models = len(state_dicts)
    uniform_soup = None
    for j, state_dict in enumerate(state_dicts):
        if j == 0:
            uniform_soup = {k: v * (1.0 / num_models) for k, v in state_dict.items()}
        else:
            uniform_soup = {k: v * (1.0 / num_models) + uniform_soup[k] for k, v in state_dict.items()}
    return uniform_soup


def test_uniform_soup_is_the_reference_mean_of_state_dicts(tiny_clip_dir):
    """Uniform soup vs github.com/mlfoundations/model-soups @ d5398f18, main.py.

    Reference math (:108-125): ``uniform_soup = sum_j state_dict_j * (1 / NUM_MODELS)`` over every
    key, then loaded into the model (``get_model_from_sd``, :125). clipft:
    ``pipeline.soup.average_state_dicts`` (float64 mean). Compared, for 3 fine-tuned-like
    ingredients of one LinearHeadFineTune: every floating tensor (1e-5) and the logits of the
    souped model (1e-5). Integer buffers are equal across ingredients (one starting model), where
    the reference's float mean casts back to the same value clipft copies from the first.
    """
    base = LinearHeadFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3})
    base.prepare_for_inference()
    base.eval()
    ingredients = []
    for seed in (7, 8, 9):
        model = copy.deepcopy(base)
        perturb(model, seed=seed)
        ingredients.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    ours = average_state_dicts(ingredients)
    theirs = reference_uniform_soup(ingredients)
    assert set(ours) == set(theirs) and "head.weight" in ours
    for key, want in theirs.items():
        if torch.is_floating_point(ingredients[0][key]):
            assert ours[key].dtype == ingredients[0][key].dtype
            torch.testing.assert_close(ours[key], want, **TOL, msg=key)
        else:
            assert all(torch.equal(s[key], ingredients[0][key]) for s in ingredients), key
            assert torch.equal(ours[key], want.round().to(ours[key].dtype)), key
    x = images(4, seed=10)
    souped, reference = copy.deepcopy(base), copy.deepcopy(base)
    souped.load_state_dict(ours)
    reference.load_state_dict(theirs)
    with torch.no_grad():
        torch.testing.assert_close(souped(x), reference(x), **TOL)
        assert not torch.allclose(souped(x), base(x), atol=1e-3)  # the soup is not the starting model
