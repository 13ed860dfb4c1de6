"""TPT (test-time prompt tuning) against its reference implementation, transcribed here in plain torch.

Reference: github.com/azshue/TPT @ 63ecbace79694205d7884e63fdc3137a200f0b0e: ``tpt_classification.py``
(confidence selection ``:41-44``, the averaged entropy ``:46-51``, the tuning loop ``:54-84``, the optimiser
``:144-146``, the per-image reset and prediction ``:270-294``) and ``clip/custom_clip.py`` (``PromptLearner``
``:62-274`` is CoOp's, ``reset`` ``:147-152``, ``inference`` ``:310-320``). The prompt learner and CLIP's text
encoder are the transcriptions of ``tests/test_parity_coop.py`` (TPT's ``PromptLearner`` is CoOp's code). On
identical views, clipft must match: the selected views and the loss exactly / to 1e-6, the context after the
steps and the tuned logits to 1e-5, and the next image must start from the reset context and a fresh AdamW.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_parity_coop import CLASSES, clip_cfg, learner_for, ref_coop_logits

from clipft.errors import ConfigError
from clipft.evaluation.tpt import (
    TPTSettings,
    augmented_views,
    average_entropy,
    check_tpt_model,
    select_confident,
    tpt_logits,
    tpt_settings,
    tune_context,
)
from clipft.methods import CLIPZeroShot, CoOp

SGD = {"_target_": "torch.optim.SGD", "lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4}


# ---------------------------------------------------------------------------- the reference, transcribed
def ref_select_confident_samples(logits, top):
    """``tpt_classification.py:41-44``."""
    batch_entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    idx = torch.argsort(batch_entropy, descending=False)[: int(batch_entropy.size()[0] * top)]
    return logits[idx], idx


def ref_avg_entropy(outputs):
    """``tpt_classification.py:46-51``."""
    logits = outputs - outputs.logsumexp(dim=-1, keepdim=True)
    avg_logits = logits.logsumexp(dim=0) - math.log(logits.shape[0])
    min_real = torch.finfo(avg_logits.dtype).min
    avg_logits = torch.clamp(avg_logits, min=min_real)
    return -(avg_logits * torch.exp(avg_logits)).sum(dim=-1)


def ref_tpt_image(clip_model, learner, ctx, optimizer, optim_state, ctx_init_state, images, steps, top):
    """One test image (``tpt_classification.py:270-294``): reset the context and the optimiser, ``test_time_tuning``
    (``:54-84``, the selection of the first step kept), then the original image (``images[:1]``) with the tuned context."""
    with torch.no_grad():
        ctx.copy_(ctx_init_state)  # model.reset(), custom_clip.py:147-152
    optimizer.load_state_dict(optim_state)
    selected_idx = None
    for _ in range(steps):
        output = ref_coop_logits(clip_model, learner, ctx, images)
        if selected_idx is not None:
            output = output[selected_idx]
        else:
            output, selected_idx = ref_select_confident_samples(output, top)
        loss = ref_avg_entropy(output)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned = ctx.detach().clone()
    with torch.no_grad():
        return ref_coop_logits(clip_model, learner, ctx, images[:1]), tuned


def coop(tiny_clip_dir) -> CoOp:
    return CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init="a photo of a").eval()


def views_of(seed: int, views: int) -> torch.Tensor:
    torch.manual_seed(seed)
    image = torch.randn(3, 32, 32)
    return augmented_views(image, views)


# ---------------------------------------------------------------------------- tests
def test_confident_selection_and_average_entropy_match_the_reference():
    logits = 5 * torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    ours, idx = select_confident(logits, 0.1)
    theirs, ref_idx = ref_select_confident_samples(logits, 0.1)
    assert idx.tolist() == ref_idx.tolist() and len(idx) == 6  # int(64 * 0.1)
    torch.testing.assert_close(average_entropy(ours), ref_avg_entropy(theirs), atol=1e-6, rtol=0)
    flat = torch.zeros(4, 10)  # the mean of uniform predictions: entropy log(10)
    assert float(average_entropy(flat)) == pytest.approx(math.log(10), abs=1e-6)


@pytest.mark.parametrize("steps", [1, 2])
def test_tuned_context_and_logits_match_the_reference_and_the_context_is_reset(tiny_clip_dir, steps):
    """Two test images in turn, as the reference's loop: the second starts from the reset context and a fresh AdamW."""
    model = coop(tiny_clip_dir)
    settings = TPTSettings(views=8, top=0.25, steps=steps, lr=5e-3)
    learner = learner_for(model, "a photo of a")
    start = model.ctx.detach().clone()
    torch.testing.assert_close(start, learner.init_ctx, atol=0, rtol=0)
    ref_ctx = torch.nn.Parameter(learner.init_ctx.clone())
    ref_opt = torch.optim.AdamW([ref_ctx], settings.lr)  # tpt_classification.py:145: torch's defaults
    optim_state = ref_opt.state_dict()
    for seed in (0, 1):
        views = views_of(seed, settings.views)
        expected, ref_tuned = ref_tpt_image(model.backbone.model, learner, ref_ctx, ref_opt, optim_state,
                                            learner.init_ctx, views, steps, settings.top)
        torch.testing.assert_close(tpt_logits(model, views, settings), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.ctx.detach(), start, atol=0, rtol=0)  # reset after the image
        with torch.no_grad():
            features = model.backbone.encode_image(views)
        tune_context(model, features, settings)
        assert float((model.ctx.detach() - start).abs().max()) > 1e-3  # it moved
        torch.testing.assert_close(model.ctx.detach(), ref_tuned, atol=1e-5, rtol=0)
        with torch.no_grad():
            model.ctx.copy_(start)


def test_views_are_the_image_then_reproducible_random_crops():
    views = views_of(0, 8)
    assert views.shape == (8, 3, 32, 32)
    torch.manual_seed(0)
    torch.testing.assert_close(views[0], torch.randn(3, 32, 32), atol=0, rtol=0)  # view 0 is the test image
    assert all(not torch.equal(views[0], v) for v in views[1:])
    torch.testing.assert_close(views_of(0, 8), views, atol=0, rtol=0)
    assert not torch.equal(views_of(1, 8)[1:], views[1:])


def test_settings_and_models_are_checked(tiny_clip_dir):
    assert tpt_settings({"enabled": True}) == TPTSettings(64, 0.1, 1, 5e-3) and TPTSettings().selected == 6
    for key, value in (("views", 1), ("top", 0.01), ("steps", -1), ("lr", -1.0), ("view", 8)):
        with pytest.raises(ConfigError, match=f"tpt.*{key}"):
            tpt_settings({key: value})
    zeroshot = CLIPZeroShot(CLASSES, clip=clip_cfg(tiny_clip_dir))
    with pytest.raises(ConfigError, match="model=clip_coop"):
        check_tpt_model(zeroshot)


def test_eval_with_tpt_writes_tpt_accuracy(tmp_path, tiny_clip_dir):
    """``eval.py model=clip_coop tpt.enabled=true``: zero-shot CLIP with the template's context, tuned per image."""
    from test_clip_pipeline import evaluate

    metrics = evaluate(["model=clip_coop", f"model.clip.name_or_path={tiny_clip_dir}", "tpt.enabled=true",
                        "tpt.views=8", "tpt.top=0.25", "plots=false"], tmp_path)
    tpt = metrics["tpt"]
    assert 0.0 <= metrics["summary"]["tpt_accuracy"] == tpt["accuracy"] <= 1.0
    assert tpt["num_samples"] == metrics["test"]["num_samples"] > 0  # every test image, one at a time
    # the loop scores the same images with the same model: untuned, it is the evaluation's own accuracy
    assert tpt["accuracy_untuned"] == pytest.approx(metrics["summary"]["test_accuracy"])
    assert (tpt["views"], tpt["selected"], tpt["steps"]) == (8, 2, 1)
