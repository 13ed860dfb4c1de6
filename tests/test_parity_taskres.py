"""TaskRes against its reference implementation, transcribed here in plain torch.

Reference: github.com/geekyutao/TaskRes @ 5195359661d6bef661090c33b81aacfc7d7cc181 (``trainers/taskres.py``,
``configs/trainers/TaskRes/adam_lr2e-3_B256_ep100.yaml``, ``train_regular.sh``, ``train.py:90-97``), on
Dassl.pytorch (``dassl/optim/optimizer.py``: ``torch.optim.Adam(params, lr, weight_decay, betas)``; defaults
weight decay 5e-4, betas (0.9, 0.999)). CLIP's text and image encoders are the transcriptions of
``tests/test_parity_coop.py`` (the reference's ``TextEncoder`` is CoOp's, taskres.py:68-88); TaskRes's own
arithmetic is transcribed below. clipft must match on identical tensors: logits to 1e-5, and the residual after
N identical Adam steps to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_parity_coop import dassl_constant_warmup_cosine, ref_image_features, ref_text_encoder, ref_tokenize

from clipft.methods.taskres import TaskRes

CLASSES = ["stop", "yield", "keep left"]
LABELS = torch.tensor([0, 1, 2, 1])
# two templates of different lengths: the raw mean (the reference) and clipft's normalised head then differ
TEMPLATES = ["a photo of a {}.", "the {} sign, seen from far away."]
ADAM = {"_target_": "torch.optim.Adam", "lr": 0.05, "betas": [0.9, 0.999], "weight_decay": 0.05}
STEPS = 5
TOL = dict(atol=1e-5, rtol=0)


def make(tiny_clip_dir, **kwargs) -> TaskRes:
    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    return TaskRes(CLASSES, clip=clip, optimizer=ADAM, prompts={"templates": TEMPLATES}, **kwargs)


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- the reference, transcribed
@torch.no_grad()
def ref_base_text_features(clip_model, tokenizer) -> torch.Tensor:
    """``_get_base_text_features`` (taskres.py:118-142): per class, the text encoder on every template's tokens,
    stacked, ``.mean(1)``: raw embeddings, no normalisation."""
    rows = []
    for name in CLASSES:
        tokens = ref_tokenize(tokenizer, [template.format(name) for template in TEMPLATES])
        rows.append(ref_text_encoder(clip_model, clip_model.text_model.embeddings.token_embedding(tokens), tokens))
    return torch.stack(rows).mean(1)


def ref_logits(clip_model, base, residual, alpha, image) -> torch.Tensor:
    """``TaskResLearner.forward`` (taskres.py:100-101, ``t + a * x``) and ``CustomCLIP.forward`` (:198-217)."""
    image_features = ref_image_features(clip_model, image)
    text_features = base + alpha * residual
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image_features @ text_features.t()


def ref_fit(clip_model, base, alpha, x) -> torch.Tensor:
    """``text_feature_residuals = zeros_like(base)`` (taskres.py:98); Dassl's Adam on the prompt learner's
    parameters (:257, the residual only: ``base_text_features`` is a buffer); CE (:283-285)."""
    residual = torch.nn.Parameter(torch.zeros_like(base))
    optim = torch.optim.Adam([residual], lr=ADAM["lr"], weight_decay=ADAM["weight_decay"], betas=tuple(ADAM["betas"]))
    for _ in range(STEPS):
        loss = F.cross_entropy(ref_logits(clip_model, base, residual, alpha, x), LABELS)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return residual.detach()


def clipft_fit(module, x) -> None:
    built = module.configure_optimizers()
    optim = built["optimizer"] if isinstance(built, dict) else built
    module.on_fit_start()
    module.train()
    for step in range(STEPS):
        loss = module.training_step((x, LABELS), step)
        optim.zero_grad()
        loss.backward()
        optim.step()


# ---------------------------------------------------------------------------- end to end (shared by the LP++ and KgCoOp tests)
def train_reload_predict(model: str, tiny_clip_dir, tmp_path: Path, extra: tuple[str, ...] = ()):
    """``train.py`` with the tiny settings of ``tests/test_clip_pipeline.py``, the best checkpoint reloaded in this
    process, ``clipft-predict``'s ``predict`` on the test images: its accuracy is the run's test accuracy."""
    from test_clip_pipeline import train

    from clipft.cli.predict import predict
    from clipft.methods.loading import load_module

    metrics = train([f"model={model}", f"model.clip.name_or_path={tiny_clip_dir}", "plots=false", *extra], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    paths = sorted(tmp_path.rglob("synthetic_signs/test/*/*.png"))
    assert paths, "the synthetic test split was not written where expected"
    records = predict(module, paths, topk=1, batch_size=16)
    accuracy = sum(r["label"] == Path(r["path"]).parent.name for r in records) / len(records)
    assert accuracy == pytest.approx(metrics["summary"]["test_accuracy"], abs=1e-6)
    return module, records


# ---------------------------------------------------------------------------- tests
def test_base_and_logits_equal_the_reference(tiny_clip_dir):
    """taskres.py:118-142 (the raw mean base), :100-101 and :198-217 (logits); R = 0 at the start (:98): zero-shot
    with the raw-mean classifier, which clipft's normalised head is not (two templates)."""
    taskres = make(tiny_clip_dir).eval()
    taskres.prepare_for_inference()
    clip_model = taskres.backbone.model
    base = ref_base_text_features(clip_model, taskres.backbone.tokenizer)
    torch.testing.assert_close(taskres.base_text, base, **TOL)
    assert not taskres.residual.detach().any()
    x = images()
    with torch.no_grad():
        expected = ref_logits(clip_model, base, torch.zeros_like(base), 0.5, x)
        torch.testing.assert_close(taskres(x), expected, **TOL)
        normalised_head = taskres.logit_scale() * taskres.backbone.encode_image(x) @ taskres.frozen_class_text().t()
        assert (normalised_head - expected).abs().max() > 1e-3


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_residual_after_adam_steps_equals_the_reference(tiny_clip_dir, scale):
    """N identical Adam steps (coupled weight decay, as Dassl's ``build_optimizer``) at ``RESIDUAL_SCALE`` 0.5 and
    1.0 (``train_regular.sh``); the logits after them too. With another scale the residual ends elsewhere."""
    x = images()
    taskres = make(tiny_clip_dir, residual_scale=scale)
    clipft_fit(taskres, x)
    clip_model = taskres.backbone.model
    base = ref_base_text_features(clip_model, taskres.backbone.tokenizer)
    expected = ref_fit(clip_model, base, scale, x)
    assert taskres.residual.detach().abs().max() > 1e-2  # it moved
    torch.testing.assert_close(taskres.residual.detach(), expected, **TOL)
    taskres.eval()
    with torch.no_grad():
        torch.testing.assert_close(taskres(x), ref_logits(clip_model, base, expected, scale, x), **TOL)
    other = ref_fit(clip_model, base, 2.0 * scale, x)
    assert (other - expected).abs().max() > 1e-3


def test_schedule_and_configs_are_the_reference_recipe(tiny_clip_dir):
    """``adam_lr2e-3_B256_ep100.yaml:15-24``: Adam 2e-3, one warm-up epoch at 1e-5, cosine per epoch (Dassl's
    ``ConstantWarmupScheduler`` over ``CosineAnnealingLR``); weight decay 5e-4 and betas from Dassl's defaults;
    ``RESIDUAL_SCALE`` 0.5 (``train_regular.sh``)."""
    from conftest import compose

    model = compose(["model=clip_taskres"]).model
    assert (model._target_, model.residual_scale) == ("clipft.methods.taskres.TaskRes", 0.5)
    assert (model.optimizer._target_, model.optimizer.lr, model.optimizer.weight_decay, list(model.optimizer.betas)) == (
        "torch.optim.Adam", 0.002, 5.0e-4, [0.9, 0.999])
    assert (model.scheduler.name, model.scheduler.warmup_epochs, model.scheduler.warmup_lr) == ("constant_warmup_cosine", 1, 1e-5)
    sched = {"name": "constant_warmup_cosine", "warmup_epochs": 1, "warmup_lr": 1e-5, "max_epochs": 10}
    taskres = make(tiny_clip_dir)
    taskres.optimizer_config, taskres.scheduler_config = {**ADAM, "lr": 0.002, "weight_decay": 5e-4}, sched
    built = taskres.configure_optimizers()
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    assert built["lr_scheduler"]["interval"] == "epoch" and isinstance(optimizer, torch.optim.Adam)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4]  # the residual is decayed, as in Dassl
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx(dassl_constant_warmup_cosine(0.002, 10, 1, 1e-5), rel=1e-9, abs=1e-15)


def test_trains_reloads_and_predicts_through_train_py(tmp_path, tiny_clip_dir):
    module, _ = train_reload_predict("clip_taskres", tiny_clip_dir, tmp_path, ("model.scheduler.warmup_epochs=0",))
    assert type(module).__name__ == "TaskRes" and bool(module.base_ready)
    assert module.residual.detach().abs().max() > 0  # the checkpoint holds the trained residual
    from clipft.methods.taskres import raw_class_text

    torch.testing.assert_close(module.base_text, raw_class_text(module.backbone, module.class_prompts, "cpu"), **TOL)
