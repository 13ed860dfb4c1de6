"""MaPLe against its reference implementation, transcribed here in plain torch.

Reference: github.com/muzairkhattak/multimodal-prompt-learning @ 69bce21ae8eda80ad6187534b2dce09cf6c59e17
(``trainers/maple.py``, ``clip/model.py``, ``configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml``) on Dassl.pytorch.
The transcription builds the reference's prompts and runs CLIP's two transformers itself from the tiny CLIP's
weights (pre-norm residual attention blocks, QuickGELU MLP, the deep prompts spliced in between blocks as
``ResidualAttentionBlock_MaPLe.forward``, ``clip/model.py:287-331``), not through the backbone's forward;
clipft must match it on identical tensors: logits to 1e-5, and every learned parameter after N identical SGD
steps to 1e-5. The tiny CLIP's towers have different widths (text 32, image 48) so the coupling maps are not square.

As in tests/test_parity_coop.py, the byte-level tokenizer makes each character a token: the reference's
"first n_ctx tokens of ctx_init" (``maple.py:84-92``) are then its first n_ctx characters.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipft.errors import ConfigError
from clipft.methods.maple import MaPLe

CLASSES = ["stop", "yield", "keep_left"]
LABELS = torch.tensor([0, 1, 2, 1])
SGD_STEPS = 3
SGD = {"_target_": "torch.optim.SGD", "lr": 0.5, "momentum": 0.9, "weight_decay": 0.05}
LAYERS = 3


def tiny_clip(layers: int = LAYERS) -> dict:
    """A random tiny CLIP whose towers differ in width (the coupling maps 32 -> 48)."""
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {
        "projection_dim": 8,
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": layers},
        "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": layers, "num_attention_heads": 4},
    }}


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- the reference, transcribed
def ref_tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """``clip.tokenize``: [SOT] tokens [EOT], zero-padded; the EOT token has the highest id in each row."""
    rows = [tokenizer(t)["input_ids"] for t in texts]
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def ref_block(block, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``ResidualAttentionBlock``: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` (QuickGELU), ``clip/model.py:329-330``."""
    attn, (batch, length, width) = block.self_attn, x.shape
    heads = attn.num_heads

    def split(t):
        return t.view(batch, length, heads, width // heads).transpose(1, 2)

    h = block.layer_norm1(x)
    q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    weights = (scores if mask is None else scores + mask).softmax(-1)
    x = x + attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, width))
    h = block.mlp.fc1(block.layer_norm2(x))
    return x + block.mlp.fc2(h * torch.sigmoid(1.702 * h))


def ref_text_encoder(clip_model, prompts, tokenized, deeper, n_ctx) -> torch.Tensor:
    """``TextEncoder.forward`` (``maple.py:52-66``) with ``ResidualAttentionBlock_MaPLe``'s text branch: at block
    ``i >= 1``, while ``counter < len(deeper)``, tokens ``1 .. n_ctx`` become ``deeper[counter]`` (``clip/model.py:313-328``)."""
    text = clip_model.text_model
    length = prompts.shape[1]
    x = prompts + text.embeddings.position_embedding.weight[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    counter = 0
    for i, block in enumerate(text.encoder.layers):
        if i > 0 and counter < len(deeper):
            ctx = deeper[counter].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + n_ctx :]], dim=1)
            counter += 1
        x = ref_block(block, x, causal)
    x = text.final_layer_norm(x)
    return clip_model.text_projection(x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)])


def ref_image_encoder(clip_model, image, shared_ctx, deeper) -> torch.Tensor:
    """``VisionTransformer_MaPLe.forward`` (``clip/model.py:445-476``): patches, class token, positions, the shared
    prompts appended, ``ln_pre``; at block ``i >= 1`` the last ``n_ctx`` tokens become ``deeper[counter]``
    (``:299-312``); ``ln_post`` of the class token, projection."""
    vision = clip_model.vision_model
    emb = vision.embeddings
    x = emb.patch_embedding(image).flatten(2).transpose(1, 2)
    x = torch.cat([emb.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + emb.position_embedding.weight
    x = torch.cat([x, shared_ctx.expand(x.shape[0], -1, -1)], dim=1)
    x = vision.pre_layrnorm(x)
    n_ctx, counter = shared_ctx.shape[0], 0
    for i, block in enumerate(vision.encoder.layers):
        if i > 0 and counter < len(deeper):
            x = torch.cat([x[:, : x.shape[1] - n_ctx], deeper[counter].expand(x.shape[0], -1, -1)], dim=1)
            counter += 1
        x = ref_block(block, x, None)
    return clip_model.visual_projection(vision.post_layernorm(x[:, 0]))


class RefMultiModalPromptLearner(torch.nn.Module):
    """``MultiModalPromptLearner`` (``maple.py:69-176``), its parameters taken from ``start`` (identical tensors in)."""

    def __init__(self, tokenizer, token_embedding, classnames, n_ctx, ctx_init, start: MaPLe):
        super().__init__()
        if ctx_init and n_ctx <= 4:  # maple.py:84-92
            with torch.no_grad():
                self.init_ctx = token_embedding(ref_tokenize(tokenizer, [ctx_init]))[0, 1 : 1 + n_ctx].clone()
            prompt_prefix = ctx_init
        else:  # maple.py:93-97 (the random draw itself: clipft's, copied below)
            prompt_prefix = " ".join(["X"] * n_ctx)
            n_ctx = len(tokenizer(prompt_prefix, add_special_tokens=False)["input_ids"])
            self.init_ctx = None
        self.ctx = torch.nn.Parameter(start.ctx.detach().clone())
        self.proj = torch.nn.Linear(*start.proj.weight.shape[::-1])
        self.proj.load_state_dict(start.proj.state_dict())
        self.compound_prompts_text = torch.nn.ParameterList(
            [torch.nn.Parameter(p.detach().clone()) for p in start.compound_prompts_text])
        self.compound_prompt_projections = torch.nn.ModuleList()
        for layer in start.compound_prompt_projections:
            copy = torch.nn.Linear(layer.in_features, layer.out_features)
            copy.load_state_dict(layer.state_dict())
            self.compound_prompt_projections.append(copy)
        classnames = [name.replace("_", " ") for name in classnames]  # maple.py:119-123
        self.tokenized_prompts = ref_tokenize(tokenizer, [prompt_prefix + " " + name + "." for name in classnames])
        with torch.no_grad():
            embedding = token_embedding(self.tokenized_prompts)
        self.token_prefix, self.token_suffix = embedding[:, :1], embedding[:, 1 + n_ctx :]  # maple.py:130-131
        self.n_cls, self.n_ctx = len(classnames), n_ctx

    def forward(self):
        """``maple.py:159-176``."""
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prompts = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
        visual_deep = [layer(self.compound_prompts_text[i]) for i, layer in enumerate(self.compound_prompt_projections)]
        return prompts, self.proj(self.ctx), list(self.compound_prompts_text), visual_deep


def ref_logits(clip_model, learner: RefMultiModalPromptLearner, image) -> torch.Tensor:
    """``CustomCLIP.forward`` (``maple.py:189-204``)."""
    prompts, shared_ctx, deep_text, deep_vision = learner()
    text = ref_text_encoder(clip_model, prompts, learner.tokenized_prompts, deep_text, learner.n_ctx)
    image_features = ref_image_encoder(clip_model, image, shared_ctx, deep_vision)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image_features @ text.t()


def build(n_ctx=2, ctx_init="a photo of a", depth=LAYERS, seed=0, **kwargs) -> tuple[MaPLe, RefMultiModalPromptLearner]:
    torch.manual_seed(seed)
    maple = MaPLe(CLASSES, clip=tiny_clip(), optimizer=SGD, n_ctx=n_ctx, ctx_init=ctx_init, prompt_depth=depth, **kwargs)
    learner = RefMultiModalPromptLearner(maple.backbone.tokenizer, maple.backbone.token_embedding(), CLASSES, n_ctx,
                                         ctx_init, maple)
    return maple, learner


def clipft_optimizer(module) -> torch.optim.Optimizer:
    built = module.configure_optimizers()
    return built["optimizer"] if isinstance(built, dict) else built


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("n_ctx, ctx_init, depth", [(2, "a photo of a", LAYERS), (2, None, 2), (3, "a photo of a", 1)])
def test_logits_match_the_reference(n_ctx, ctx_init, depth):
    """Shallow (J = 1) and deep MaPLe, context from the template's first tokens or random (``maple.py:84-97``)."""
    maple, learner = build(n_ctx, ctx_init, depth)
    assert len(maple.compound_prompts_text) == depth - 1 == len(maple.compound_prompt_projections)
    if ctx_init:  # the layer-0 context starts as the template's first n_ctx token embeddings
        torch.testing.assert_close(maple.ctx.detach(), learner.init_ctx, atol=0, rtol=0)
    assert maple.ctx.shape[0] == learner.n_ctx
    maple.eval()
    x = images()
    with torch.no_grad():
        expected = ref_logits(maple.backbone.model, learner, x)
        torch.testing.assert_close(maple(x), expected, atol=1e-5, rtol=0)
        maple.prepare_for_inference()  # the cached class text gives the same logits
        torch.testing.assert_close(maple(x), expected, atol=1e-5, rtol=0)
        plain = maple.logit_scale() * maple.backbone.encode_image(x) @ maple.class_text_features().t()
    assert (maple(x) - plain).abs().max() > 1e-4  # the image prompts change the image features


def test_learned_prompts_after_sgd_steps_match_the_reference():
    """N identical SGD steps (momentum, weight decay on every prompt-learner parameter: Dassl's ``build_optimizer``)
    on the cross-entropy (``maple.py:199-202,282-285``): context, coupling maps and deep prompts end equal."""
    maple, learner = build()
    ref_opt = torch.optim.SGD(learner.parameters(), lr=SGD["lr"], momentum=SGD["momentum"], weight_decay=SGD["weight_decay"])
    opt = clipft_optimizer(maple)
    x = images()
    maple.train()
    for step in range(SGD_STEPS):
        loss = maple.training_step((x, LABELS), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_loss = F.cross_entropy(ref_logits(maple.backbone.model, learner, x), LABELS)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), atol=1e-5, rtol=0)
    ours = dict(maple.extra_parameter_groups()["head"])
    theirs = dict(learner.named_parameters())
    assert set(ours) == set(theirs)
    for name, param in theirs.items():
        torch.testing.assert_close(ours[name].detach(), param.detach(), atol=1e-5, rtol=0, msg=name)
    start, _ = build()
    assert (maple.compound_prompts_text[1].detach() - start.compound_prompts_text[1].detach()).abs().max() > 1e-3
    assert not any(p.requires_grad for p in maple.backbone.parameters())  # both towers and the temperature frozen


def test_initialisation_follows_the_reference():
    """The J - 1 coupling maps start as copies of one ``nn.Linear`` (``_get_clones``, ``maple.py:116-117``), ``proj``
    is its own draw, the deep text prompts are N(0, 0.02) draws (``:111-114``); ``init_seed`` makes them reproducible."""
    maple, _ = build(depth=LAYERS, init_seed=3)
    first, second = maple.compound_prompt_projections
    torch.testing.assert_close(first.weight, second.weight, atol=0, rtol=0)
    assert not torch.allclose(first.weight, maple.proj.weight[: first.weight.shape[0]])
    assert not torch.allclose(maple.compound_prompts_text[0], maple.compound_prompts_text[1])
    again, _ = build(depth=LAYERS, init_seed=3, seed=9)
    torch.testing.assert_close(again.compound_prompts_text[1].detach(), maple.compound_prompts_text[1].detach(), atol=0, rtol=0)
    torch.testing.assert_close(again.proj.weight.detach(), maple.proj.weight.detach(), atol=0, rtol=0)


def test_a_depth_beyond_the_towers_is_refused():
    with pytest.raises(ConfigError, match="prompt_depth=4 asks for prompts in 4 text layers, but HFCLIPBackbone.s text tower has 3 layers"):
        build(depth=LAYERS + 1)
    with pytest.raises(ConfigError, match="prompt_depth must be an integer >= 1"):
        build(depth=0)


def test_paper_settings_are_the_config_defaults(tmp_path):
    """``configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml``: 2 tokens of "a photo of a", depth 9, SGD 0.0035,
    one constant warm-up epoch at 1e-5 then cosine."""
    from conftest import compose

    model = compose(["model=clip_maple", "seed=4"], root=tmp_path).model
    assert model._target_ in ("clipft.methods.MaPLe", "clipft.methods.maple.MaPLe")
    assert (model.n_ctx, model.ctx_init, model.prompt_depth, model.init_seed) == (2, "a photo of a", 9, 4)
    assert (model.optimizer.lr, model.optimizer.momentum, model.optimizer.weight_decay) == (0.0035, 0.9, 5.0e-4)
    assert (model.scheduler.name, model.scheduler.warmup_epochs, model.scheduler.warmup_lr) == ("constant_warmup_cosine", 1, 1.0e-5)
