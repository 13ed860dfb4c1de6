"""Class-chunked prompt encoding (clipft.methods.chunked_text) equals the single pass, with gradients.

The "reference" is the single pass itself: ``backbone.encode_text_embeddings`` over all class prompts
at once, what CoOp / CoCoOp / KgCoOp do today. The chunked path (checkpointed chunks, pattern of
mlfoundations/open_clip @ 67bfcaa ``src/open_clip/zero_shot_classifier.py:21-70``) must give the same
CoOp loss and the same context gradients to 1e-5, for a chunk size that does not divide the class count,
and must really recompute chunk by chunk in backward (the memory saving).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipft.errors import ConfigError
from clipft.methods import CoOp
from clipft.methods.chunked_text import encode_prompts
from clipft.models import HFCLIPBackbone

CLASSES = [f"class {i}" for i in range(7)]  # 7 prompts: chunks of 3 leave a remainder of 1
SGD = {"_target_": "torch.optim.SGD", "lr": 0.01}


def tiny_backbone() -> HFCLIPBackbone:
    """In float64: the two paths differ only by summation order, which float32 shows at ~1e-5 after a 100x logit scale."""
    torch.manual_seed(0)
    return HFCLIPBackbone(config={"projection_dim": 8}).eval().double()


def coop_inputs(backbone: HFCLIPBackbone, seed: int = 0):
    """CoOp's text side by hand: a learned 4-token context written after the start token of each prompt."""
    tokens = backbone.tokenize([f"X X X X {name}." for name in CLASSES])
    table = backbone.token_embedding()
    with torch.no_grad():
        fixed = table(tokens["input_ids"])
    noise = torch.randn(4, fixed.shape[-1], generator=torch.Generator().manual_seed(seed), dtype=fixed.dtype)
    ctx = torch.nn.Parameter(noise * 0.02)
    return tokens, fixed, ctx


def coop_loss(backbone, tokens, fixed, ctx, chunk_size):
    embeddings = fixed.clone()
    embeddings[:, 1:5] = ctx.unsqueeze(0).expand(len(CLASSES), -1, -1)
    text = encode_prompts(backbone, embeddings, tokens, chunk_size)
    image = F.normalize(torch.randn(5, text.shape[-1], generator=torch.Generator().manual_seed(1), dtype=text.dtype), dim=-1)
    logits = 100.0 * image @ text.t()
    return F.cross_entropy(logits, torch.tensor([0, 3, 6, 2, 5]))


@pytest.mark.parametrize("chunk_size", [3, 1, 6])
def test_chunked_loss_and_context_gradients_equal_single_pass(chunk_size):
    backbone = tiny_backbone()
    for p in backbone.parameters():
        p.requires_grad_(False)
    tokens, fixed, ctx = coop_inputs(backbone)
    whole = coop_loss(backbone, tokens, fixed, ctx, None)
    whole.backward()
    expected = ctx.grad.clone()
    ctx.grad = None
    chunked = coop_loss(backbone, tokens, fixed, ctx, chunk_size)
    chunked.backward()
    assert expected.abs().max() > 0  # the comparison below is not between two zeros
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(ctx.grad, expected, atol=1e-5, rtol=0)


def test_chunks_are_recomputed_in_backward():
    """Checkpointing: 3 chunks run the text tower 3 times forward and 3 more times in backward (recompute)."""
    backbone = tiny_backbone()
    for p in backbone.parameters():
        p.requires_grad_(False)
    tokens, fixed, ctx = coop_inputs(backbone)
    calls = []
    backbone.text_tower.register_forward_pre_hook(lambda module, args: calls.append(args))  # recompute may stop early
    loss = coop_loss(backbone, tokens, fixed, ctx, 3)
    assert len(calls) == 3
    loss.backward()
    assert len(calls) == 6
    calls.clear()
    with torch.no_grad():  # no graph: plain chunks, no checkpoint, no recompute
        coop_loss(backbone, tokens, fixed, ctx, 3)
    assert len(calls) == 3


def test_chunked_gradients_into_a_trainable_text_tower():
    """Full fine-tuning through chunked prompts (FLYP-like): the tower's gradients equal the single pass."""
    backbone = tiny_backbone()
    tokens, fixed, ctx = coop_inputs(backbone)
    grads = []
    for chunk_size in (None, 3):
        backbone.zero_grad()
        coop_loss(backbone, tokens, fixed, ctx, chunk_size).backward()
        grads.append(backbone.model.text_model.encoder.layers[0].mlp.fc1.weight.grad.clone())
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=0)


def test_hook_line_reproduces_coop_class_text_features():
    """The line the lead puts in ``CoOp.class_text_features`` encodes exactly what CoOp encodes today."""
    coop = CoOp(CLASSES, {"_target_": "clipft.models.HFCLIPBackbone", "config": {"projection_dim": 8}}, SGD,
                ctx_init=None, n_ctx=4, class_token_position="middle", class_specific=True, init_seed=0)
    tokens = {"input_ids": coop.prompt_ids, "attention_mask": coop.prompt_mask}
    chunked = encode_prompts(coop.backbone, coop.prompt_token_embeddings(), tokens, 3)
    chunked.sum().backward()
    grad = coop.ctx.grad.clone()
    coop.ctx.grad = None
    whole = coop.class_text_features()
    whole.sum().backward()
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, coop.ctx.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "64"])
def test_bad_chunk_size_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="text_chunk_size"):
        encode_prompts(None, torch.zeros(2, 3, 4), {"input_ids": torch.zeros(2, 3, dtype=torch.long)}, bad)


def test_hook_line_reproduces_cocoop_conditioned_text_features():
    """CoCoOp's prompts are (images x classes): the chunked line equals ``conditioned_text_features`` today."""
    from clipft.methods import CoCoOp

    torch.manual_seed(0)
    cocoop = CoCoOp(CLASSES[:3], {"_target_": "clipft.models.HFCLIPBackbone", "config": {"projection_dim": 8}}, SGD, init_seed=0)
    image = F.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    batch, classes = image.shape[0], cocoop.num_classes
    ctx = cocoop.ctx.unsqueeze(0) + cocoop.meta_net(image).unsqueeze(1)
    embeddings = cocoop.prompt_embeddings.unsqueeze(0).repeat(batch, 1, 1, 1)
    embeddings[:, :, cocoop.ctx_positions] = ctx.unsqueeze(1).expand(-1, classes, -1, -1)
    tokens = {"input_ids": cocoop.prompt_ids.repeat(batch, 1), "attention_mask": cocoop.prompt_mask.repeat(batch, 1)}
    chunked = encode_prompts(cocoop.backbone, embeddings.view(batch * classes, embeddings.shape[2], -1), tokens, 4)
    chunked.sum().backward()
    grad = cocoop.meta_net[0].weight.grad.clone()
    cocoop.zero_grad()
    whole = cocoop.conditioned_text_features(image)
    whole.sum().backward()
    torch.testing.assert_close(chunked.view(batch, classes, -1), whole, atol=1e-5, rtol=0)
    assert grad.abs().max() > 0
    torch.testing.assert_close(grad, cocoop.meta_net[0].weight.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["MaPLe", "PromptSRC"])
def test_deep_prompt_learners_encode_their_classes_in_chunks_equal_to_one_pass(method):
    """MaPLe / PromptSRC: every class shares the layer prompts; chunks of 3 of 7 classes give the single pass's
    features and the same gradients into the context and the deep text prompts."""
    from clipft import registry

    cls = registry.get("method", method)
    depth = {"prompt_depth": 2} if method == "MaPLe" else {"prompt_depth_text": 2, "prompt_depth_image": 2}
    torch.manual_seed(0)
    module = cls(CLASSES, {"_target_": "clipft.models.HFCLIPBackbone", "config": {"projection_dim": 8}}, SGD, **depth)
    deep = module.compound_prompts_text if method == "MaPLe" else module.text_prompts
    results = []
    for chunk in (None, 3):
        module.text_chunk_size = chunk
        module.zero_grad()
        features = module.class_text_features()
        (features * torch.linspace(-1, 1, features.numel()).view_as(features)).sum().backward()
        results.append((features.detach(), module.ctx.grad.clone(), deep[0].grad.clone()))
    (whole, ctx_whole, deep_whole), (chunked, ctx_chunked, deep_chunked) = results
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
    assert ctx_whole.abs().max() > 0 and deep_whole.abs().max() > 0
    torch.testing.assert_close(ctx_chunked, ctx_whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(deep_chunked, deep_whole, atol=1e-5, rtol=0)
