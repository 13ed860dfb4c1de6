"""CoOp and CoCoOp against their reference implementation, transcribed here in plain torch.

Reference: github.com/KaiyangZhou/CoOp @ ff61507c790454bce7c5052c3ac39e60772f1f89 (``trainers/coop.py``,
``trainers/cocoop.py``, ``configs/trainers/``, ``scripts/``) on github.com/KaiyangZhou/Dassl.pytorch @
c61a1b570ac6333bd50fb5ae06aea59002fb20bb (``dassl/optim/``). The transcriptions below build the reference's
prompts, text features and logits from the tiny CLIP's weights with their own code (CLIP's transformer
spelled out, not the backbone's forward), and clipft must match them on identical tensors: logits to
1e-5, and the trained parameters after N identical SGD steps to 1e-5.

One generalisation: the reference counts one token per context word ("X X X X" and "a photo of a" are
4 tokens in CLIP's BPE). The tiny CLIP's byte-level tokenizer makes every character a token, so here the
context length M is the token count of the context words (what the reference's count is for CLIP's BPE).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipft.methods import CoCoOp, CoOp

CLASSES = ["stop", "yield", "keep_left"]  # "_" -> " " as trainers/coop.py:98
LABELS = torch.tensor([0, 1, 2, 1])
SGD_STEPS = 5
# identical on both sides; a large rate and decay so that a missing term shows above 1e-5
SGD = {"_target_": "torch.optim.SGD", "lr": 0.5, "momentum": 0.9, "weight_decay": 0.05}


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- the reference, transcribed
def ref_tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """``clip.tokenize``: [SOT] tokens [EOT], zero-padded (``trainers/coop.py:102``); EOT has the highest id."""
    rows = [tokenizer(t)["input_ids"] for t in texts]
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def ref_encode(tokenizer, text: str) -> list[int]:
    """``_tokenizer.encode``: the tokens without SOT/EOT (``trainers/coop.py:99``)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def ref_text_encoder(clip_model, prompts: torch.Tensor, tokenized: torch.Tensor) -> torch.Tensor:
    """``TextEncoder.forward`` (``trainers/coop.py:46-57``): positional embedding, CLIP's transformer
    (pre-norm residual attention blocks with a causal mask, QuickGELU MLP), ``ln_final``, the EOT
    token's feature (``tokenized.argmax(-1)``) through ``text_projection``."""
    text = clip_model.text_model
    batch, length, width = prompts.shape
    x = prompts + text.embeddings.position_embedding.weight[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    for block in text.encoder.layers:
        attn = block.self_attn
        heads = attn.num_heads
        h = block.layer_norm1(x)

        def split(t):
            return t.view(batch, length, heads, width // heads).transpose(1, 2)

        q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
        weights = (q @ k.transpose(-1, -2) / math.sqrt(width // heads) + causal).softmax(-1)
        x = x + attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, width))
        h = block.mlp.fc1(block.layer_norm2(x))
        x = x + block.mlp.fc2(h * torch.sigmoid(1.702 * h))
    x = text.final_layer_norm(x)
    return clip_model.text_projection(x[torch.arange(batch), tokenized.argmax(dim=-1)])


def ref_image_features(clip_model, image: torch.Tensor) -> torch.Tensor:
    """``image_encoder(image)`` then ``image_features / image_features.norm(...)`` (``trainers/coop.py:196-202``)."""
    feats = clip_model.visual_projection(clip_model.vision_model(pixel_values=image).pooler_output)
    return feats / feats.norm(dim=-1, keepdim=True)


class RefPromptLearner:
    """``PromptLearner`` (``trainers/coop.py:60-182``; CoCoOp's ``trainers/cocoop.py:62-161`` is the ``end`` case)."""

    def __init__(self, tokenizer, token_embedding, classnames, n_ctx: int, ctx_init: str | None, position="end"):
        if ctx_init:  # coop.py:72-80: the template's embeddings, generic whatever CSC says
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = len(ref_encode(tokenizer, ctx_init))
            with torch.no_grad():
                self.init_ctx = token_embedding(ref_tokenize(tokenizer, [ctx_init]))[0, 1 : 1 + n_ctx, :]
            prompt_prefix = ctx_init
        else:  # coop.py:91
            prompt_prefix = " ".join(["X"] * n_ctx)
            n_ctx = len(ref_encode(tokenizer, prompt_prefix))
            self.init_ctx = None
        classnames = [name.replace("_", " ") for name in classnames]  # coop.py:98-100
        self.name_lens = [len(ref_encode(tokenizer, name)) for name in classnames]
        self.tokenized_prompts = ref_tokenize(tokenizer, [prompt_prefix + " " + name + "." for name in classnames])
        with torch.no_grad():
            embedding = token_embedding(self.tokenized_prompts)
        self.token_prefix = embedding[:, :1, :]  # SOS, coop.py:109
        self.token_suffix = embedding[:, 1 + n_ctx :, :]  # CLS, ".", EOS, coop.py:110
        self.n_cls, self.n_ctx, self.class_token_position = len(classnames), n_ctx, position

    def __call__(self, ctx: torch.Tensor) -> torch.Tensor:
        """coop.py:118-182."""
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        prompts = []
        for i in range(self.n_cls):
            name_len = self.name_lens[i]
            class_i, suffix_i = suffix[i : i + 1, :name_len], suffix[i : i + 1, name_len:]
            if self.class_token_position == "middle":
                half = self.n_ctx // 2
                parts = [prefix[i : i + 1], ctx[i : i + 1, :half], class_i, ctx[i : i + 1, half:], suffix_i]
            else:  # front
                parts = [prefix[i : i + 1], class_i, ctx[i : i + 1], suffix_i]
            prompts.append(torch.cat(parts, dim=1))
        return torch.cat(prompts, dim=0)


def ref_coop_logits(clip_model, learner: RefPromptLearner, ctx: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``CustomCLIP.forward`` (``trainers/coop.py:195-208``)."""
    image_features = ref_image_features(clip_model, image)
    text_features = ref_text_encoder(clip_model, learner(ctx), learner.tokenized_prompts)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image_features @ text_features.t()


def ref_cocoop_logits(clip_model, learner: RefPromptLearner, ctx, meta_net, image) -> torch.Tensor:
    """``PromptLearner.forward`` + ``CustomCLIP.forward`` (``trainers/cocoop.py:144-161,174-194``): every image
    shifts the context by ``meta_net(its normalised feature)`` and reads its own class prompts."""
    image_features = ref_image_features(clip_model, image)
    ctx_shifted = ctx.unsqueeze(0) + meta_net(image_features).unsqueeze(1)  # (batch, n_ctx, width)
    logits = []
    for ctx_i, imf_i in zip(ctx_shifted, image_features):
        text_features = ref_text_encoder(clip_model, learner(ctx_i), learner.tokenized_prompts)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits.append(clip_model.logit_scale.exp() * imf_i @ text_features.t())
    return torch.stack(logits)


def ref_sgd(params, cfg=SGD) -> torch.optim.Optimizer:
    """Dassl's ``build_optimizer`` for ``sgd`` over the prompt learner's ``parameters()``: one group, the same
    weight decay on every parameter, no dampening, no Nesterov (``dassl/optim/optimizer.py:83-113``)."""
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                           dampening=0, nesterov=False)


def clipft_optimizer(module) -> torch.optim.Optimizer:
    built = module.configure_optimizers()
    return built["optimizer"] if isinstance(built, dict) else built


def learner_for(module, ctx_init, position="end") -> RefPromptLearner:
    n_words = None if ctx_init else module.hparams.n_ctx
    return RefPromptLearner(module.backbone.tokenizer, module.backbone.token_embedding(), CLASSES, n_words, ctx_init, position)


# ---------------------------------------------------------------------------- CoOp
@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_logits_match_the_reference_for_each_class_token_position(tiny_clip_dir, position):
    """``trainers/coop.py:118-182`` (end / middle / front, unified or class-specific) and ``:195-208`` (logits)."""
    x = images()
    for csc in (False, True):
        coop = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init=None, n_ctx=4,
                    class_specific=csc, class_token_position=position, init_seed=0).eval()
        learner = learner_for(coop, None, position)
        assert coop.ctx.shape[-2] == learner.n_ctx and (coop.ctx.dim() == 3) == csc
        with torch.no_grad():
            expected = ref_coop_logits(coop.backbone.model, learner, coop.ctx.detach(), x)
            torch.testing.assert_close(coop(x), expected, atol=1e-5, rtol=0, msg=f"csc={csc}")


@pytest.mark.parametrize("ctx_init, csc, position", [("a photo of a", True, "end"), (None, True, "middle"), (None, False, "front")])
def test_coop_context_after_sgd_steps_matches_the_reference(tiny_clip_dir, ctx_init, csc, position):
    """N identical SGD steps (momentum, weight decay) on the cross-entropy of the logits
    (``trainers/coop.py:259-274``, Dassl ``optimizer.py:105-113``); with ``ctx_init`` the reference's context is its own
    template embedding (``coop.py:72-80``: generic even under CSC)."""
    kwargs = {} if position == "end" else {"class_token_position": position}
    coop = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init=ctx_init, n_ctx=3, class_specific=csc, **kwargs)
    learner = learner_for(coop, ctx_init, position)
    start = (learner.init_ctx if ctx_init else coop.ctx.detach()).clone()
    torch.testing.assert_close(coop.ctx.detach(), start, atol=0, rtol=0)  # the same starting point, shape included
    ref_ctx = torch.nn.Parameter(start.clone())
    ref_opt, opt = ref_sgd([ref_ctx]), clipft_optimizer(coop)
    x = images()
    coop.train()
    for step in range(SGD_STEPS):
        loss = coop.training_step((x, LABELS), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_loss = F.cross_entropy(ref_coop_logits(coop.backbone.model, learner, ref_ctx, x), LABELS)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), atol=1e-5, rtol=0)
    assert (coop.ctx.detach() - start).abs().max() > 1e-3  # it moved
    torch.testing.assert_close(coop.ctx.detach(), ref_ctx.detach(), atol=1e-5, rtol=0)


def test_random_contexts_follow_the_run_seed(tiny_clip_dir):
    """The reference draws with ``nn.init.normal_(std=0.02)`` (``trainers/coop.py:90``) after
    ``set_random_seed(cfg.SEED)`` (``train.py:130-132``): each seed of ``scripts/coop/main.sh:14`` (1 2 3)
    starts from its own context, and a seed always from the same one."""

    def ctx(**kwargs):
        return CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init=None, n_ctx=4, **kwargs).ctx.detach()

    torch.manual_seed(1)  # the default, init_seed null: the global RNG, as Lightning's seed_everything(seed) leaves it
    global_one = ctx()
    torch.manual_seed(2)
    global_two = ctx()
    assert not torch.allclose(global_one, global_two)
    torch.manual_seed(1)
    torch.testing.assert_close(ctx(), global_one, atol=0, rtol=0)
    one, two = ctx(init_seed=1), ctx(init_seed=2)  # clip_coop.yaml: init_seed = the run's seed
    assert not torch.allclose(one, two)
    torch.testing.assert_close(ctx(init_seed=1), one, atol=0, rtol=0)
    assert abs(float(one.std()) - 0.02) < 0.004 and abs(float(one.mean())) < 0.004  # N(0, 0.02)


def test_class_specific_random_contexts_are_independent_draws(tiny_clip_dir):
    """CSC: one ``(n_cls, n_ctx, dim)`` draw (``trainers/coop.py:84-90``), every class its own context."""
    torch.manual_seed(3)
    coop = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init=None, n_ctx=4, class_specific=True)
    ctx = coop.ctx.detach()
    assert ctx.shape[0] == len(CLASSES)
    for i in range(len(CLASSES)):
        for j in range(i + 1, len(CLASSES)):
            assert not torch.allclose(ctx[i], ctx[j])
    unified = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init=None, n_ctx=4)
    assert unified.ctx.dim() == 2


def test_ctx_init_with_class_specific_follows_the_reference(tiny_clip_dir):
    """With ``CTX_INIT`` the reference builds one generic context from the template whatever ``CSC`` says
    (``trainers/coop.py:72-80``); clipft's per-class copies are ``csc_from_init=true``."""
    coop = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init="a photo of a", class_specific=True)
    learner = learner_for(coop, "a photo of a")
    assert coop.ctx.dim() == 2 and not coop.class_specific
    torch.testing.assert_close(coop.ctx.detach(), learner.init_ctx, atol=0, rtol=0)
    copies = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init="a photo of a", class_specific=True, csc_from_init=True)
    assert copies.ctx.shape == (len(CLASSES), *learner.init_ctx.shape)
    torch.testing.assert_close(copies.ctx.detach()[2], learner.init_ctx, atol=0, rtol=0)


# ---------------------------------------------------------------------------- CoCoOp
def test_cocoop_logits_and_sgd_steps_match_the_reference(tiny_clip_dir):
    """Meta-net ``Linear(vis, vis // 16) -> ReLU -> Linear(vis // 16, ctx_dim)`` with PyTorch's default init
    (``trainers/cocoop.py:95-99``), the image-conditioned context ``ctx + meta_net(f)`` (``:144-161``), per-image
    logits (``:174-194``), and SGD with weight decay on every prompt-learner parameter, the meta-net's biases
    included (``:235``, Dassl ``optimizer.py:83-113``)."""
    torch.manual_seed(4)
    cocoop = CoCoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD)
    last = cocoop.meta_net[2]
    assert float(last.weight.detach().abs().sum()) > 0 and float(last.bias.detach().abs().sum()) > 0  # not zero-initialised
    bound = 1 / math.sqrt(last.in_features)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(last.bias.detach().abs().max()) <= bound
    learner = learner_for(cocoop, "a photo of a")
    torch.testing.assert_close(cocoop.ctx.detach(), learner.init_ctx, atol=0, rtol=0)
    ref_ctx = torch.nn.Parameter(learner.init_ctx.clone())
    ref_meta = torch.nn.Sequential(
        torch.nn.Linear(cocoop.meta_net[0].in_features, cocoop.meta_net[0].out_features),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(cocoop.meta_net[2].in_features, cocoop.meta_net[2].out_features),
    )
    ref_meta.load_state_dict(cocoop.meta_net.state_dict())  # identical tensors
    assert ref_meta[0].out_features == cocoop.backbone.embed_dim // 16
    x = images(3)
    cocoop.eval()
    with torch.no_grad():
        expected = ref_cocoop_logits(cocoop.backbone.model, learner, ref_ctx, ref_meta, x)
        torch.testing.assert_close(cocoop(x), expected, atol=1e-5, rtol=0)
    ref_opt, opt = ref_sgd([ref_ctx, *ref_meta.parameters()]), clipft_optimizer(cocoop)
    labels = LABELS[:3]
    cocoop.train()
    for step in range(SGD_STEPS):
        loss = cocoop.training_step((x, labels), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_loss = F.cross_entropy(ref_cocoop_logits(cocoop.backbone.model, learner, ref_ctx, ref_meta, x), labels)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
    torch.testing.assert_close(cocoop.ctx.detach(), ref_ctx.detach(), atol=1e-5, rtol=0)
    for (name, ours), theirs in zip(cocoop.meta_net.named_parameters(), ref_meta.parameters()):
        torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-5, rtol=0, msg=name)


def test_cocoop_meta_net_draw_follows_the_seed_and_zero_init_is_the_switch(tiny_clip_dir):
    def meta(**kwargs):
        return CoCoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, **kwargs).meta_net[0].weight.detach()

    torch.testing.assert_close(meta(init_seed=5), meta(init_seed=5), atol=0, rtol=0)
    assert not torch.allclose(meta(init_seed=5), meta(init_seed=6))
    zero = CoCoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, meta_net_init="zero")
    assert not zero.meta_net[2].weight.detach().any() and not zero.meta_net[2].bias.detach().any()


# ---------------------------------------------------------------------------- schedule and recipes
def dassl_constant_warmup_cosine(base_lr: float, max_epoch: int, warmup_epoch: int, cons_lr: float) -> list[float]:
    """The rate of each epoch under Dassl's ``build_lr_scheduler`` with ``LR_SCHEDULER: cosine``, ``WARMUP_TYPE:
    constant`` (``dassl/optim/lr_scheduler.py:128-141``; ``WARMUP_RECOUNT`` True, ``defaults.py:185``), stepped once
    per epoch (``trainers/coop.py:281-282``): the ``ConstantWarmupScheduler`` mechanics (``:10-54``) written out
    over torch's own ``CosineAnnealingLR`` (the successor, ``T_max=max_epoch``), which reads the live rate."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(max_epoch))

    def set_lr(lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr

    last_epoch = 0  # the wrapper's initial step (_LRScheduler.__init__): get_lr() -> cons_lr
    set_lr(cons_lr if last_epoch < warmup_epoch else successor.get_last_lr()[0])
    rates = []
    for _ in range(max_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if last_epoch >= warmup_epoch:  # step(): lr_scheduler.py:27-33
            successor.step()
        else:
            last_epoch += 1
            set_lr(cons_lr if last_epoch < warmup_epoch else successor.get_last_lr()[0])  # get_lr(): :51-54
    return rates


@pytest.mark.parametrize("max_epochs, warmup_epochs", [(10, 1), (7, 2)])
def test_constant_warmup_then_cosine_matches_dassl(tiny_clip_dir, max_epochs, warmup_epochs):
    """``configs/trainers/CoOp/rn50.yaml:15-22`` (and CoCoOp's): SGD 0.002, cosine, 1 warm-up epoch at 1e-5."""
    sched = {"name": "constant_warmup_cosine", "warmup_epochs": warmup_epochs, "warmup_lr": 1e-5, "max_epochs": max_epochs}
    coop = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer={**SGD, "lr": 0.002}, scheduler=sched, ctx_init=None, n_ctx=2)
    built = coop.configure_optimizers()
    assert built["lr_scheduler"]["interval"] == "epoch"
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(max_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = dassl_constant_warmup_cosine(0.002, max_epochs, warmup_epochs, 1e-5)
    assert rates[:warmup_epochs] == [1e-5] * warmup_epochs and rates[warmup_epochs] == pytest.approx(0.002)
    assert rates == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_paper_recipes_compose_with_the_reference_settings(tmp_path):
    """CoOp: ``scripts/coop/main.sh`` + ``configs/trainers/CoOp/rn50.yaml`` (batch 32, SGD 0.002, 200 epochs at 8-16
    shots, ``COOP.md:17-22``), M=16 random, end. CoCoOp: ``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml``
    (batch 1, 10 epochs, 4 tokens from "a photo of a")."""
    from conftest import compose

    coop = compose(["experiment=coop_paper", "seed=3"], root=tmp_path)
    model = coop.model
    assert (model._target_, model.n_ctx, model.ctx_init, model.class_specific, model.class_token_position) == (
        "clipft.methods.CoOp", 16, None, False, "end")
    assert (model.optimizer.lr, model.optimizer.momentum, model.optimizer.weight_decay) == (0.002, 0.9, 5.0e-4)
    assert dict(model.scheduler) == {"name": "constant_warmup_cosine", "warmup_epochs": 1, "warmup_lr": 1.0e-5, "max_epochs": None}
    assert (coop.trainer.max_epochs, coop.data.batch_size, coop.data.shots) == (200, 32, 16)
    assert model.init_seed == 3 and coop.data.shot_seed == 3  # the seed picks draw and context, as the reference's
    assert coop.callbacks.early_stopping is None
    cocoop = compose(["experiment=cocoop_paper", "seed=2"], root=tmp_path)
    model = cocoop.model
    assert (model._target_, model.n_ctx, model.ctx_init, model.meta_net_init, model.bias_decay) == (
        "clipft.methods.CoCoOp", 4, "a photo of a", "default", True)
    assert (cocoop.trainer.max_epochs, cocoop.data.batch_size, model.init_seed) == (10, 1, 2)
    plain = compose(["model=clip_coop", "seed=7"], root=tmp_path)
    assert plain.model.init_seed == 7 and plain.model.scheduler.name == "constant_warmup_cosine"
