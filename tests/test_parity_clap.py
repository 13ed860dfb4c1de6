"""CLAP against its reference implementation, on identical tensors.

Reference: github.com/jusiro/CLAP @ dbdf4095b3d824546474c725539b9f4efff3ca0e (``trainers/adapters.py``,
``configs/trainers/SGD_lr1e-1_B256_ep300.yaml``), whose optimiser and schedule come from Dassl,
github.com/KaiyangZhou/Dassl.pytorch @ c61a1b570ac6333bd50fb5ae06aea59002fb20bb. The reference's math is
transcribed below in plain torch (read, not imported); the text and image encoders are the tiny CLIP's,
shared by both sides, so only the method's own arithmetic is compared.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipft.methods import CLAP

CLASSES = ["stop", "yield", "keep left"]
# two templates: the reference's raw-mean anchor and clipft's normalised head then differ
PROMPTS = {"templates": ["a photo of a {}.", "a road sign showing the {} symbol, seen from far away."]}
TOL = dict(atol=1e-5, rtol=0)


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def make(tiny_clip_dir, **kwargs) -> CLAP:
    return CLAP(CLASSES, clip=clip_cfg(tiny_clip_dir), prompts=PROMPTS, **kwargs).eval()


# ---------------------------------------------------------------------------------------------- the reference
@torch.no_grad()
def reference_base_text_features(clap: CLAP) -> torch.Tensor:
    """adapters.py:118-127 (``_get_base_text_features``): per class, the raw text embeddings of its
    templates, stacked, ``text_embeddings.mean(1)``: no normalisation anywhere."""
    rows = []
    for prompts in clap.class_prompts:
        tokens = clap.backbone.tokenize(list(prompts), device="cpu")
        rows.append(clap.backbone.encode_text(**tokens, normalize=False).float())
    return torch.stack(rows).mean(1)


def reference_forward_lp(features: torch.Tensor, prototypes: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """adapters.py:343-354 (``forward_lp``): both sides normalised, times ``logit_scale.exp()``."""
    image_features_norm = features / features.norm(dim=-1, keepdim=True)
    prototypes_norm = prototypes / prototypes.norm(dim=-1, keepdim=True)
    return image_features_norm @ prototypes_norm.t() * logit_scale.exp()


def reference_lagrangian_multipliers(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """adapters.py:232-252 (``init_lagrangian_multipliers``, constraint ``l2``): the mean zero-shot
    probability of each class on its own training images."""
    one_hot = F.one_hot(labels, logits.shape[-1]).float()
    return torch.diag(torch.softmax(logits, -1).t() @ one_hot) / one_hot.sum(0)


def reference_constraint(prototypes, base, alpha_constraint) -> torch.Tensor:
    """adapters.py:219-230 (``zero_shot_constraint``, ``l2``): ``torch.mean`` over classes."""
    disimilitude = (prototypes - base.clone()).pow(2).sum(-1)
    return torch.mean(alpha_constraint * disimilitude)


class ConstantWarmupScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Dassl dassl/optim/lr_scheduler.py:10-54: ``cons_lr`` for ``warmup_epoch`` epochs, then the successor
    (a ``CosineAnnealingLR(T_max=MAX_EPOCH)`` built first, lr_scheduler.py:128-140; WARMUP_RECOUNT=True)."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
        self.successor, self.warmup_epoch, self.cons_lr = successor, warmup_epoch, cons_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


def reference_fit(features, labels, base, logit_scale, *, epochs, images, batch_size=256, lr=0.1, seed=0):
    """The reference's training of the ``ZS`` + ``l2`` adapter:

    - prototypes start at ``base_text_features`` (adapters.py:148-150); lambda from the initial model's
      logits on the training pool (adapters.py:537-562);
    - SGD, lr 0.1, momentum 0.9 (Dassl default), weight decay 0 (config), dampening 0, no Nesterov
      (Dassl dassl/optim/optimizer.py:105-112); cosine over MAX_EPOCH after one warm-up epoch at 1e-5
      (config OPTIM), stepped once per epoch, after its last batch (adapters.py:720-721);
    - each epoch shuffles the pool and runs ``len(train_loader_x)`` batches of ``batch_size``
      (adapters.py:430-456); the loader holds the ``images`` training images with Dassl's
      ``drop_last = N >= batch_size`` (dassl/data/data_manager.py:43);
    - loss: CE + the constraint (adapters.py:699-707).

    The shuffle is ``np.random.rand(n).argsort()`` there; here ``torch.randperm`` from ``seed``, the draw
    clipft makes from the same global generator.
    """
    prototypes = torch.nn.Parameter(base.clone())
    with torch.no_grad():
        alpha_constraint = reference_lagrangian_multipliers(labels, reference_forward_lp(features, prototypes, logit_scale))
    optim = torch.optim.SGD([prototypes], lr=lr, momentum=0.9, weight_decay=0.0, dampening=0, nesterov=False)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, float(epochs))
    sched = ConstantWarmupScheduler(optim, successor, 1, 1e-5)
    num_batches = images // batch_size if images >= batch_size else 1  # len(DataLoader) with that drop_last
    torch.manual_seed(seed)
    for _ in range(epochs):
        idx = torch.randperm(features.shape[0])
        feats, labs = features[idx], labels[idx]
        for batch_idx in range(num_batches):
            x = feats[batch_idx * batch_size : (batch_idx + 1) * batch_size]
            y = labs[batch_idx * batch_size : (batch_idx + 1) * batch_size]
            loss = F.cross_entropy(reference_forward_lp(x, prototypes, logit_scale), y)
            loss = loss + reference_constraint(prototypes, base, alpha_constraint)
            optim.zero_grad()
            loss.backward()
            optim.step()
            if batch_idx + 1 == num_batches:
                sched.step()
    return prototypes.detach(), alpha_constraint


# ---------------------------------------------------------------------------------------------- shared data
@pytest.fixture(scope="module")
def data(tiny_clip_dir):
    clap = make(tiny_clip_dir)
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2] * 4)
    with torch.no_grad():
        raw = clap.backbone.encode_image(x, normalize=False).float()
    return {"x": x, "labels": labels, "raw": raw, "features": F.normalize(raw, dim=-1)}


def clipft_fit(tiny_clip_dir, data, *, epochs, images=None, seed=0, features=None, labels=None, **kwargs):
    clap = make(tiny_clip_dir, epochs=epochs, **kwargs)
    torch.manual_seed(seed)
    clap.fit_weight(data["features"] if features is None else features, data["labels"] if labels is None else labels, images)
    return clap


def test_logits_and_anchors_equal_the_reference(tiny_clip_dir, data):
    """adapters.py:126-127 (anchors = raw mean prompt embedding), 148-150 (prototypes start there) and
    343-354 (logits): epoch 0 on raw image features, and through ``forward`` on images."""
    clap = make(tiny_clip_dir)
    clap.prepare_for_inference()
    base = reference_base_text_features(clap)
    torch.testing.assert_close(clap.weight.detach(), base, **TOL)
    logit_scale = clap.backbone.logit_scale.detach()
    expected = reference_forward_lp(data["raw"], base, logit_scale)
    with torch.no_grad():
        torch.testing.assert_close(clap.class_logits(data["features"]), expected, **TOL)
        torch.testing.assert_close(clap(data["x"]), expected, **TOL)
    # clipft's old anchors (the unit-norm zero-shot head) are another classifier with two templates
    old = make(tiny_clip_dir, anchors="normalized")
    old.prepare_for_inference()
    with torch.no_grad():
        assert (old.class_logits(data["features"]) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("batch_size, views", [(None, 1), (4, 1), (4, 3)], ids=["full-batch", "minibatches", "views"])
def test_weights_after_training_equal_the_reference(tiny_clip_dir, data, batch_size, views):
    """adapters.py:219-252, 421-484, 699-721 with Dassl's SGD and warm-up + cosine: lambda and the weights
    after every step of ``epochs`` identical epochs. ``full-batch``: clipft's default, which is the
    reference whenever the training set fits one batch of 256. ``views``: a pool of 3 views of each of
    the 12 images, batches per epoch sized by the 12 images (``len(train_loader_x)``)."""
    epochs = 7
    # raw encoder outputs, as the reference holds them (it normalises in forward_lp; clipft at extraction)
    raw = data["raw"].repeat(views, 1) + 0.1 * torch.randn(12 * views, data["raw"].shape[1], generator=torch.Generator().manual_seed(1))
    labels = data["labels"].repeat(views)
    clap = clipft_fit(tiny_clip_dir, data, epochs=epochs, batch_size=batch_size, images=12, features=F.normalize(raw, dim=-1), labels=labels)
    base = reference_base_text_features(clap)
    expected, multipliers = reference_fit(raw, labels, base, clap.backbone.logit_scale.detach(),
                                          epochs=epochs, images=12, batch_size=batch_size or 256)
    torch.testing.assert_close(clap.penalty, multipliers, **TOL)
    assert (clap.weight.detach() - base).abs().max() > 1e-2  # the weights did move
    torch.testing.assert_close(clap.weight.detach(), expected, **TOL)


@pytest.mark.parametrize("variant", [
    {"penalty_reduction": "sum"},  # clipft before the parity check
    {"anchors": "normalized"},  # clipft before the parity check
    {"schedule": "constant", "warmup_epochs": 0},  # clipft before the parity check
    {"lr": 0.01},  # clipft's old rate
], ids=["penalty-sum", "normalized-anchors", "constant-rate", "lr-0.01"])
def test_the_parity_check_catches_each_old_variant(tiny_clip_dir, data, variant):
    """The comparison above fails when the math drifts: each of clipft's old settings ends elsewhere."""
    epochs = 7
    clap = clipft_fit(tiny_clip_dir, data, epochs=epochs, **variant)
    expected, _ = reference_fit(data["raw"], data["labels"], reference_base_text_features(clap),
                                clap.backbone.logit_scale.detach(), epochs=epochs, images=12)
    assert (clap.weight.detach() - expected).abs().max() > 1e-3


def test_the_paper_config_is_the_reference_recipe():
    """SGD_lr1e-1_B256_ep300.yaml:1-23 and adapters.py:143 (20 augmented views), as clip_clap_paper.yaml."""
    from conftest import compose

    model = compose(["model=clip_clap_paper"]).model
    assert (model.lr, model.momentum, model.epochs, model.batch_size, model.augment_views) == (0.1, 0.9, 300, 256, 20)
    assert (model.schedule, model.warmup_epochs, model.warmup_lr) == ("cosine", 1, 1e-5)
    assert (model.penalty_reduction, model.anchors, model.constraint) == ("mean", "reference", "adaptive")
    default = compose(["model=clip_clap"]).model
    assert (default.penalty_reduction, default.anchors, default.lr, default.batch_size) == ("mean", "reference", 0.1, None)


def test_the_paper_config_trains_through_train_py(tmp_path, tiny_clip_dir):
    """clip_clap_paper end to end (augmented views from the datamodule, minibatches), shortened."""
    from test_clip_pipeline import train

    from clipft.methods.loading import load_module

    metrics = train(["model=clip_clap_paper", f"model.clip.name_or_path={tiny_clip_dir}", "model.epochs=3",
                     "model.augment_views=2", "model.batch_size=8", "plots=false"], tmp_path)
    assert metrics["summary"]["test_accuracy"] is not None
    module = load_module(metrics["best_checkpoint"])
    assert bool(module.fitted) and module.augment_views == 2 and float(module.penalty.sum()) > 0
