"""KgCoOp against its reference implementation, transcribed here in plain torch.

Reference: github.com/htyao89/KgCoOp @ c43ccc32c8739f64b165cfa205fcc6c0f5bb5b17 (``KgCoOp/trainers/kgcoop.py``,
``KgCoOp/configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml``, ``KgCoOp/scripts/run.sh``, ``base2new_train.sh``), on
its ``Dassl.ProGrad.pytorch`` (``dassl/optim/optimizer.py``, ``dassl/config/defaults.py``). CoOp's prompt learner,
text encoder and SGD are the transcriptions of ``tests/test_parity_coop.py`` (KgCoOp's ``PromptLearner`` is
CoOp's ``end`` case, kgcoop.py:82-193); the knowledge-guided part is transcribed below. clipft must match on
identical tensors: logits to 1e-5, and the context after N identical SGD steps to 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_parity_coop import RefPromptLearner, ref_coop_logits, ref_sgd, ref_text_encoder, ref_tokenize
from test_parity_taskres import train_reload_predict

from clipft.methods.kgcoop import KgCoOp

CLASSES = ["stop", "yield", "keep_left"]  # "_" -> " " in both prompts, kgcoop.py:127,137
LABELS = torch.tensor([0, 1, 2, 1])
TEMPLATE = "a photo of a {}."
SGD_STEPS = 5
# identical on both sides; a large rate and decay so that a missing term shows above 1e-5
SGD = {"_target_": "torch.optim.SGD", "lr": 0.5, "momentum": 0.9, "weight_decay": 0.05}


def make(tiny_clip_dir, **kwargs) -> KgCoOp:
    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    return KgCoOp(CLASSES, clip=clip, optimizer=SGD, prompts={"templates": [TEMPLATE]}, **kwargs)


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- the reference, transcribed
@torch.no_grad()
def ref_handcrafted(clip_model, tokenizer) -> torch.Tensor:
    """``PromptLearner.__init__`` (kgcoop.py:136-146): ``encode_text`` of ``CUSTOM_TEMPLATES[dataset]`` per class,
    normalised. ``encode_text`` is the token embedding through the text encoder (``clip/model.py``)."""
    tokens = ref_tokenize(tokenizer, [TEMPLATE.format(c.replace("_", " ")) for c in CLASSES])
    text = ref_text_encoder(clip_model, clip_model.text_model.embeddings.token_embedding(tokens), tokens)
    return text / text.norm(dim=-1, keepdim=True)


def ref_score(clip_model, learner: RefPromptLearner, ctx: torch.Tensor, text_features_old: torch.Tensor) -> torch.Tensor:
    """``CustomCLIP.forward`` (kgcoop.py:223-243): ``1 - mean(CosineSimilarity(dim=1, eps=1e-07)(text, old))``."""
    text_features = ref_text_encoder(clip_model, learner(ctx), learner.tokenized_prompts)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    text_features_old = text_features_old / text_features_old.norm(dim=-1, keepdim=True)
    score = torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text_features, text_features_old)
    return 1.0 - torch.mean(score)


def ref_fit(module: KgCoOp, learner: RefPromptLearner, x: torch.Tensor, weight: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``forward_backward`` (kgcoop.py:297-311): ``CE(output) + W * score``, Dassl SGD on the context only."""
    clip_model = module.backbone.model
    old = ref_handcrafted(clip_model, module.backbone.tokenizer)
    ctx = torch.nn.Parameter(learner.init_ctx.clone())
    optim = ref_sgd([ctx])
    losses = []
    for _ in range(SGD_STEPS):
        loss = F.cross_entropy(ref_coop_logits(clip_model, learner, ctx, x), LABELS) + weight * ref_score(clip_model, learner, ctx, old)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.detach())
    return ctx.detach(), losses


def clipft_fit(module: KgCoOp, x: torch.Tensor) -> list[torch.Tensor]:
    built = module.configure_optimizers()
    optim = built["optimizer"] if isinstance(built, dict) else built
    module.train()
    losses = []
    for step in range(SGD_STEPS):
        loss = module.training_step((x, LABELS), step)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.detach())
    return losses


# ---------------------------------------------------------------------------- tests
def test_logits_and_handcrafted_embeddings_equal_the_reference(tiny_clip_dir):
    """kgcoop.py:94-104 (context "a photo of a"), :136-146 (hand-crafted embeddings), :223-243 (logits, score), at the
    start and with a moved context."""
    kg = make(tiny_clip_dir).eval()
    learner = RefPromptLearner(kg.backbone.tokenizer, kg.backbone.token_embedding(), CLASSES, None, "a photo of a")
    torch.testing.assert_close(kg.ctx.detach(), learner.init_ctx, atol=0, rtol=0)
    old = ref_handcrafted(kg.backbone.model, kg.backbone.tokenizer)
    torch.testing.assert_close(kg.handcrafted_text(), old, atol=1e-5, rtol=0)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(kg(x), ref_coop_logits(kg.backbone.model, learner, kg.ctx, x), atol=1e-5, rtol=0)
        # at the start the learned prompt is the hand-crafted one: the penalty is 0
        assert abs(float(kg.knowledge_loss(kg.class_text_features()))) < 1e-6
        kg.ctx.add_(0.5 * torch.randn(kg.ctx.shape, generator=torch.Generator().manual_seed(1)))
        ours = kg.knowledge_loss(kg.class_text_features())
        torch.testing.assert_close(ours, ref_score(kg.backbone.model, learner, kg.ctx, old), atol=1e-6, rtol=0)
        torch.testing.assert_close(kg(x), ref_coop_logits(kg.backbone.model, learner, kg.ctx, x), atol=1e-5, rtol=0)
    assert float(ours) > 1e-3  # a moved context: the penalty sees it


def test_context_after_sgd_steps_equals_the_reference(tiny_clip_dir):
    """N identical SGD steps on ``CE + 8 * (1 - mean cos)`` (kgcoop.py:309-310, ``scripts/run.sh``: W=8.0), with
    Dassl's SGD (momentum, weight decay on the context). Without the penalty (``kg_weight=0``: CoOp) the context
    ends elsewhere: the comparison sees the term."""
    x = images()
    kg = make(tiny_clip_dir, kg_weight=8.0)
    learner = RefPromptLearner(kg.backbone.tokenizer, kg.backbone.token_embedding(), CLASSES, None, "a photo of a")
    start = kg.ctx.detach().clone()
    expected, ref_losses = ref_fit(kg, learner, x, 8.0)
    losses = clipft_fit(kg, x)
    torch.testing.assert_close(torch.stack(losses), torch.stack(ref_losses), atol=1e-5, rtol=0)
    assert (kg.ctx.detach() - start).abs().max() > 1e-3  # it moved
    torch.testing.assert_close(kg.ctx.detach(), expected, atol=1e-5, rtol=0)
    coop = make(tiny_clip_dir, kg_weight=0.0)
    clipft_fit(coop, x)
    assert (coop.ctx.detach() - expected).abs().max() > 1e-3


def test_configs_are_the_reference_recipe():
    """``vit_b16_ep100_ctxv1.yaml`` (SGD 0.002, warm-up 1 epoch at 1e-5, cosine, CTX_INIT), ``run.sh`` (W=8.0),
    ``base2new_train.sh`` (NCTX=4, CSC=False, CTP=end), Dassl defaults (momentum 0.9, weight decay 5e-4)."""
    from conftest import compose

    for name in ("clip_kgcoop", "clip_kgcoop_paper"):
        model = compose([f"model={name}"]).model
        assert (model._target_, model.kg_weight, model.ctx_init, model.class_specific, model.class_token_position) == (
            "clipft.methods.kgcoop.KgCoOp", 8.0, "a photo of a", False, "end"), name
        assert (model.optimizer.lr, model.optimizer.momentum, model.optimizer.weight_decay) == (0.002, 0.9, 5.0e-4)
        assert (model.scheduler.name, model.scheduler.warmup_epochs, model.scheduler.warmup_lr) == ("constant_warmup_cosine", 1, 1e-5)


def test_bad_weight_is_refused(tiny_clip_dir):
    from clipft.errors import ConfigError

    with pytest.raises(ConfigError, match="kg_weight"):
        make(tiny_clip_dir, kg_weight=-1.0)


def test_trains_reloads_and_predicts_through_train_py(tmp_path, tiny_clip_dir):
    module, records = train_reload_predict("clip_kgcoop", tiny_clip_dir, tmp_path, ("model.scheduler.warmup_epochs=0",))
    assert type(module).__name__ == "KgCoOp" and module.kg_weight == 8.0
    template = module.backbone.token_embedding()(module.backbone.tokenize(["a photo of a"])["input_ids"])[0, module.ctx_positions]
    assert (module.ctx.detach() - template).abs().max() > 0  # the checkpoint holds the trained context
    assert {r["label"] for r in records} <= set(module.class_names)
