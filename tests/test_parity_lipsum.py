"""Lipsum-FT against its reference implementation, transcribed here in plain torch.

Reference: github.com/cs-giung/lipsum-ft @ 1331873d21a460e3818b736b45a54b45173ca74d, ``scripts/Lipsum-FT.py``
(JAX/Flax): random texts ``:165-175``, zero-shot and fine-tuned features ``:177-179``, the cross-entropy
``:181-190``, the regulariser ``:192-201``, the loss ``:203-205``, defaults ``:450-480``. The transcription below
computes the texts' embeddings, both models' image features, the energies and the squared error from the tiny
CLIP's own HF modules (``text_model(...).pooler_output @ text_projection``, as ``FlaxCLIPTextModel`` +
``text_projection.ckpt``), and clipft must match it on identical tensors: the regulariser to 1e-5, and every
trained parameter after N identical AdamW steps to 1e-5. The random draw itself is JAX's in the reference;
here the token ids are clipft's, given to both sides, and their layout and range are checked separately.

Not the reference (clipft's head): ``LinearHeadFineTune``'s head is ``x @ W.T + b`` with ``W`` = temperature x
class text; the reference's is ``exp(s) * x @ cls`` without a bias. The transcription carries clipft's head so
that the Lipsum-FT part is what is compared.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipft.errors import ConfigError
from clipft.methods import ContrastiveFineTune, LinearHeadFineTune
from clipft.methods.lipsum import TextLayout, step_generator

CLASSES = ["stop", "yield", "keep left"]
LABELS = torch.tensor([0, 1, 2, 1])
STEPS = 3
ADAMW = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
SMALL = {"lipsum_texts": 6, "lipsum_tokens": 5}


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def perturb(module: nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move a tower away from the zero-shot weights (else both energies coincide and the term is 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


# ---------------------------------------------------------------------------- the reference, transcribed
def ref_text_features(clip_model, ids: torch.Tensor) -> torch.Tensor:
    """``clip_text_model(txts).pooler_output @ clip_text_projection``, normalised (``Lipsum-FT.py:173-175``)."""
    txts = clip_model.text_projection(clip_model.text_model(input_ids=ids).pooler_output)
    return txts / txts.norm(dim=-1, keepdim=True)


def ref_get_features(clip_model, images: torch.Tensor) -> torch.Tensor:
    """``get_features`` (``Lipsum-FT.py:95-101``): pooler output, visual projection, L2 normalisation."""
    feats = clip_model.visual_projection(clip_model.vision_model(pixel_values=images).pooler_output)
    return feats / feats.norm(dim=-1, keepdim=True)


def ref_feat_regularization(zs_model, ft_model, ids, images, text_model=None) -> torch.Tensor:
    """``Lipsum-FT.py:166-201``: energies of both models against the random texts (the pretrained temperature)
    and ``sum((source - target)^2, -1) / (2 K)``, averaged over the batch. ``text_model``: the fine-tuned text
    tower where it trains (clipft's FLYP case; the reference's text tower is the pretrained one)."""
    with torch.no_grad():
        txts_zs = ref_text_features(zs_model, ids)
        priors = ref_get_features(zs_model, images)
    txts = txts_zs if text_model is None else ref_text_features(text_model, ids)
    output = ref_get_features(ft_model, images)
    scale = zs_model.logit_scale.exp()
    target = scale * priors @ txts_zs.T
    source = scale * output @ txts.T
    return (torch.sum(torch.square(source - target), dim=-1) / (2 * ids.shape[0])).mean()


def token_ids(module, step=0) -> torch.Tensor:
    tokens = module.lipsum.random_texts(module, step)
    assert bool(tokens["attention_mask"].all())  # every position is read, as the reference's unpadded texts
    return tokens["input_ids"]


# ---------------------------------------------------------------------------- random texts
def test_random_texts_are_start_random_tokens_end_drawn_per_step_and_seed(tiny_clip_dir):
    """``Lipsum-FT.py:166-172``: ``[SOT] + L random ids + [EOT]``, K texts, new each step, from the run's seed."""
    module = LinearHeadFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=ADAMW, lipsum_weight=1.0,
                                lipsum_texts=80, lipsum_tokens=8, lipsum_seed=3)
    ids = token_ids(module)
    start, end = module.backbone.tokenize(["a"])["input_ids"][0, [0, -1]].tolist()
    assert ids.shape == (80, 10) and (ids[:, 0] == start).all() and (ids[:, -1] == end).all()
    content = ids[:, 1:-1]
    assert not torch.isin(content, torch.tensor([start, end])).any()
    assert content.min() >= 0 and content.max() < module.backbone.token_embedding().num_embeddings
    assert len(content.unique()) > 150  # uniform over the ~257 allowed ids, not a constant
    torch.testing.assert_close(token_ids(module), ids, atol=0, rtol=0)  # a step's texts are a function of (seed, step)
    assert not torch.equal(token_ids(module, step=1), ids)
    module.lipsum.seed = 4
    assert not torch.equal(token_ids(module), ids)


class StubTokenizer:
    """``tokenize`` of a real tokenizer's layout: ``start`` + one id per word + ``end``, padded to ``width``."""

    def __init__(self, start, end, pad, width, mask, vocab):
        self.start, self.end, self.pad, self.width, self.mask, self.vocab = start, end, pad, width, mask, vocab

    def tokenize(self, texts, device=None):
        rows = [self.start + [320 + "ab".index(w) for w in t.split()] + self.end for t in texts]
        width = self.width or max(len(r) for r in rows)
        out = {"input_ids": torch.tensor([r + [self.pad] * (width - len(r)) for r in rows])}
        if self.mask:
            out["attention_mask"] = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        return out

    def token_embedding(self):
        return nn.Embedding(self.vocab, 1)


def test_with_clip_bpe_ids_the_range_is_the_reference_one():
    """CLIP's BPE: SOT 49406, EOT 49407; the reference draws ``randint(0, 49406)`` (``Lipsum-FT.py:168-171``), the same
    with HF's padding (mask; pad = EOT) and open_clip's (77 ids, zeros after EOT, no mask)."""
    for stub in (StubTokenizer([49406], [49407], 49407, None, True, 49408), StubTokenizer([49406], [49407], 0, 77, False, 49408)):
        layout = TextLayout(stub)
        torch.testing.assert_close(layout.allowed, torch.arange(49406), atol=0, rtol=0)
        ids = layout.random_texts(80, 8, step_generator(0, 0))["input_ids"]
        assert ids.shape[1] == (stub.width or 10) and (ids[:, 0] == 49406).all() and (ids[:, 9] == 49407).all()
        assert ids[:, 1:9].max() < 49406 and not ids[:, 10:].any()


def test_siglip_layout_pads_with_its_end_token():
    """No start token, ``</s>`` (1) both end and padding, fixed width, no mask: content then ``</s>`` to the end."""
    layout = TextLayout(StubTokenizer([], [1], 1, 16, False, 400))
    ids = layout.random_texts(4, 8, step_generator(0, 0))["input_ids"]
    assert ids.shape == (4, 16) and (ids[:, 8:] == 1).all() and not (ids[:, :8] == 1).any()


# ---------------------------------------------------------------------------- the regulariser and its steps
def test_regulariser_matches_the_reference_on_identical_tensors(tiny_clip_dir):
    """``Lipsum-FT.py:192-201`` with the weight of ``:204-205``, image tower moved away from the zero-shot one."""
    module = LinearHeadFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=ADAMW, lipsum_weight=2.5, **SMALL)
    zeroshot = copy.deepcopy(module.backbone.model).eval()  # the pretrained weights (identical tensors)
    perturb(module.backbone.image_tower, seed=1)
    x, ids = images(), token_ids(module)
    ours = module.lipsum.loss(module, x, module.backbone.encode_image(x))
    expected = 2.5 * ref_feat_regularization(zeroshot, module.backbone.model, ids, x)
    assert float(expected.detach()) > 1e-3  # not the trivial zero of identical models
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert not any("lipsum" in k or "_reference" in k for k in module.state_dict())  # the zero-shot copy is not saved
    assert pickle.loads(pickle.dumps(module.lipsum))._reference is None


def test_cross_entropy_lipsum_parameters_after_adamw_steps_match_the_reference(tiny_clip_dir):
    """N identical AdamW steps (``Lipsum-FT.py:247-251``) on ``NLL + lambda * feat_regularization`` (``:181-205``):
    every image-tower parameter and the head to 1e-5; the text tower and the temperature stay the pretrained ones."""
    module = LinearHeadFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=ADAMW, lipsum_weight=1.0, **SMALL)
    module.initialise_head()
    zeroshot = copy.deepcopy(module.backbone.model).eval()
    ref_model = copy.deepcopy(module.backbone.model)
    ref_head = copy.deepcopy(module.head)
    trained = [*ref_model.vision_model.parameters(), *ref_model.visual_projection.parameters(), *ref_head.parameters()]
    ref_opt = torch.optim.AdamW(trained, lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"], weight_decay=0.0)
    built = module.configure_optimizers()
    opt = built["optimizer"] if isinstance(built, dict) else built
    x, ids = images(), token_ids(module)  # outside a trainer every call is step 0: the same texts on both sides
    module.train()
    for step in range(STEPS):
        loss = module.training_step((x, LABELS), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        nll = F.cross_entropy(ref_head(ref_get_features(ref_model, x)), LABELS)
        ref_loss = nll + 1.0 * ref_feat_regularization(zeroshot, ref_model, ids, x)
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), atol=1e-5, rtol=0)
    ours = dict(module.backbone.model.named_parameters())
    moved = 0.0
    for name, theirs in ref_model.named_parameters():
        if name.endswith("k_proj.bias"):  # softmax ignores a key bias: its gradient is float noise, which Adam scales up
            continue
        torch.testing.assert_close(ours[name].detach(), theirs.detach(), atol=1e-5, rtol=0, msg=name)
        moved = max(moved, float((theirs - dict(zeroshot.named_parameters())[name]).detach().abs().max()))
    assert moved > 1e-4  # the image tower trained
    torch.testing.assert_close(module.head.weight.detach(), ref_head.weight.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(module.head.bias.detach(), ref_head.bias.detach(), atol=1e-5, rtol=0)


def test_flyp_adds_the_term_with_its_fine_tuned_text_tower(tiny_clip_dir):
    """FLYP trains both towers: the fine-tuned energy reads the fine-tuned text tower, the zero-shot energy the
    pretrained one (clipft's generalisation; with a frozen text tower it is the reference's). Weight 0 is FLYP."""
    kwargs = {"clip": clip_cfg(tiny_clip_dir), "optimizer": ADAMW, **SMALL}
    on = ContrastiveFineTune(CLASSES, lipsum_weight=0.5, **kwargs)
    off = ContrastiveFineTune(CLASSES, lipsum_weight=0.0, **kwargs)
    zeroshot = copy.deepcopy(on.backbone.model).eval()
    perturb(on.backbone.model, seed=2, scale=0.02)
    off.backbone.model.load_state_dict(on.backbone.model.state_dict())
    x, ids = images(), token_ids(on)
    on.train(), off.train()
    difference = on.training_step((x, LABELS), 0) - off.training_step((x, LABELS), 0)
    expected = 0.5 * ref_feat_regularization(zeroshot, on.backbone.model, ids, x, text_model=on.backbone.model)
    assert float(expected.detach()) > 1e-3 and off.lipsum._reference is None
    torch.testing.assert_close(difference, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key, value", [("lipsum_weight", -1.0), ("lipsum_tokens", 0), ("lipsum_texts", 2.5)])
def test_bad_settings_name_the_key(tiny_clip_dir, key, value):
    with pytest.raises(ConfigError, match=key):
        LinearHeadFineTune(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=ADAMW, **{key: value})


def test_a_random_backbone_has_no_zero_shot_model_to_hold_to():
    tiny = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": 8}}
    module = LinearHeadFineTune(CLASSES, clip=tiny, optimizer=ADAMW, lipsum_weight=1.0, **SMALL).train()
    with pytest.raises(ConfigError, match="lipsum_weight"):
        module.training_step((images(), LABELS), 0)


# ---------------------------------------------------------------------------- end to end
def test_flyp_lipsum_trains_one_epoch_and_reloads(tmp_path, tiny_clip_dir, monkeypatch):
    """``model=clip_flyp_lipsum`` through train.py's pipeline: the term is added on every training step, and the
    checkpoint rebuilds the switch, not the zero-shot copy."""
    from test_clip_pipeline import train

    from clipft.methods.lipsum import LipsumFT
    from clipft.methods.loading import load_module

    calls, loss = [], LipsumFT.loss

    def counted(self, method, images, image):
        value = loss(self, method, images, image)
        calls.append((int(method.global_step), float(value.detach())))
        return value

    monkeypatch.setattr(LipsumFT, "loss", counted)
    metrics = train(["model=clip_flyp_lipsum", f"model.clip.name_or_path={tiny_clip_dir}", "model.lipsum_texts=16",
                     "model.optimizer.lr=1e-4", "model.scheduler.warmup_steps=0", "plots=false"], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    assert type(module).__name__ == "ContrastiveFineTune" and module.lipsum.weight == 1.0 and module.lipsum.texts == 16
    assert module.hparams.lipsum_seed == 42 and module.lipsum.tokens == 8  # the run's seed; the reference's length
    assert metrics["summary"]["test_accuracy"] is not None
    assert [step for step, _ in calls] == list(range(len(calls))) and len(calls) >= 2  # one term per optimiser step
    assert calls[0][1] == 0.0 < max(value for _, value in calls[1:])  # step 0: the zero-shot model itself; then a gap
