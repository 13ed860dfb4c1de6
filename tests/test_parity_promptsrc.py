"""PromptSRC against its reference implementation, transcribed here in plain torch.

Reference: github.com/muzairkhattak/PromptSRC @ bb95c77b634d63488f2cad81ff4a72d53bdd06d5 (``trainers/promptsrc.py``,
``clip/model.py``, ``configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml``) on Dassl.pytorch. The
transcription runs CLIP's transformers itself from the tiny CLIP's weights with the IVLP prompts spliced in between
blocks (``ResidualAttentionBlock_IVLP.forward``, ``clip/model.py:229-256``), the frozen teacher features, the loss of
``forward_backward`` (``promptsrc.py:297-316``) and the GPA arithmetic (``promptsrc.py:262-270,320-360``); clipft must
match on identical tensors: logits to 1e-5, the loss of every step and the learned parameters after N identical SGD
steps to 1e-5, and the aggregated prompts after the last epoch to 1e-5.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_parity_maple import LAYERS, images, ref_block, ref_tokenize, tiny_clip

from clipft.methods.promptsrc import PromptSRC, gpa_weights

CLASSES = ["stop", "yield", "keep_left"]
LABELS = torch.tensor([0, 1, 2, 1])
TEMPLATES = ["a photo of a {}.", "a bad photo of a {}.", "art of the {}."]
SGD = {"_target_": "torch.optim.SGD", "lr": 0.5, "momentum": 0.9, "weight_decay": 0.05}


# ---------------------------------------------------------------------------- the reference, transcribed
def ref_text_encoder(clip_model, prompts, tokenized, deep, n_ctx) -> torch.Tensor:
    """``TextEncoder.forward`` (``promptsrc.py:58-69``) through IVLP text blocks: block ``i`` (1 <= i < depth) replaces
    tokens ``1 .. n_ctx`` with its own ``VPT_shallow`` (``clip/model.py:242-252``)."""
    text = clip_model.text_model
    length = prompts.shape[1]
    x = prompts + text.embeddings.position_embedding.weight[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    for i, block in enumerate(text.encoder.layers):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:, :1], deep[i - 1].expand(x.shape[0], -1, -1), x[:, 1 + n_ctx :]], dim=1)
        x = ref_block(block, x, causal)
    x = text.final_layer_norm(x)
    return clip_model.text_projection(x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)])


def ref_image_encoder(clip_model, image, vpt: list[torch.Tensor]) -> torch.Tensor:
    """``VisionTransformer.forward`` (``clip/model.py:394-423``): ``VPT`` appended after the positions (when the vision
    depth is > 0), ``ln_pre``, IVLP blocks replacing the last ``n`` tokens with their ``VPT_shallow`` (``:234-241``)."""
    vision = clip_model.vision_model
    emb = vision.embeddings
    x = emb.patch_embedding(image).flatten(2).transpose(1, 2)
    x = torch.cat([emb.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + emb.position_embedding.weight
    if vpt:
        x = torch.cat([x, vpt[0].expand(x.shape[0], -1, -1)], dim=1)
    x = vision.pre_layrnorm(x)
    for i, block in enumerate(vision.encoder.layers):
        if 1 <= i < len(vpt):
            n = vpt[i].shape[0]
            x = torch.cat([x[:, : x.shape[1] - n], vpt[i].expand(x.shape[0], -1, -1)], dim=1)
        x = ref_block(block, x, None)
    return clip_model.visual_projection(vision.post_layernorm(x[:, 0]))


class RefCustomCLIP(torch.nn.Module):
    """``VLPromptLearner`` + ``CustomCLIP`` (``promptsrc.py:72-211``), the prompts copied from ``start``."""

    def __init__(self, tokenizer, clip_model, classnames, n_ctx, ctx_init, start: PromptSRC):
        super().__init__()
        self.clip_model = clip_model
        with torch.no_grad():
            self.init_ctx = clip_model.text_model.embeddings.token_embedding(ref_tokenize(tokenizer, [ctx_init]))[0, 1 : 1 + n_ctx]
        self.ctx = torch.nn.Parameter(start.ctx.detach().clone())
        self.text_vpt = torch.nn.ParameterList([torch.nn.Parameter(p.detach().clone()) for p in start.text_prompts])
        self.image_vpt = torch.nn.ParameterList([torch.nn.Parameter(p.detach().clone()) for p in start.image_prompts])
        names = [name.replace("_", " ") for name in classnames]
        self.tokenized_prompts = ref_tokenize(tokenizer, [ctx_init + " " + name + "." for name in names])
        with torch.no_grad():
            embedding = clip_model.text_model.embeddings.token_embedding(self.tokenized_prompts)
            self.prefix, self.suffix = embedding[:, :1], embedding[:, 1 + n_ctx :]
            teacher = []
            for template in TEMPLATES:  # promptsrc.py:118-128: the frozen model's unnormalised text, averaged
                tokens = ref_tokenize(tokenizer, [template.replace("{}", name) for name in names])
                prompts = clip_model.text_model.embeddings.token_embedding(tokens)
                teacher.append(ref_text_encoder(clip_model, prompts, tokens, [], 0).unsqueeze(1))
            self.fixed_embeddings = torch.cat(teacher, dim=1).mean(dim=1)
        self.n_ctx = n_ctx

    def forward(self, image, label):
        """``CustomCLIP.forward`` in training (``promptsrc.py:185-209``)."""
        model = self.clip_model
        logit_scale = model.logit_scale.exp()
        prompts = torch.cat([self.prefix, self.ctx.unsqueeze(0).expand(len(self.prefix), -1, -1), self.suffix], dim=1)
        text_features = ref_text_encoder(model, prompts, self.tokenized_prompts, list(self.text_vpt), self.n_ctx)
        image_features = ref_image_encoder(model, image, list(self.image_vpt))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = logit_scale * image_features @ text_features.t()
        fixed = self.fixed_embeddings / self.fixed_embeddings.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            zs = ref_image_encoder(model, image, [])
            zs = zs / zs.norm(dim=-1, keepdim=True)
            zs_logits = logit_scale * zs @ fixed.t()
        return F.cross_entropy(logits, label), text_features, fixed, zs, image_features, zs_logits, logits


def ref_loss(outputs) -> torch.Tensor:
    """``forward_backward`` (``promptsrc.py:297-313``) with TEXT_LOSS_WEIGHT 25, IMAGE_LOSS_WEIGHT 10."""
    loss_ce, text, fixed, zs_image, image, zs_logits, logits = outputs
    loss_text = F.l1_loss(text, fixed, reduction="mean") * 25
    loss_image = F.l1_loss(image, zs_image, reduction="mean") * 10
    kl = F.kl_div(F.log_softmax(logits / 1, dim=1), F.log_softmax(zs_logits / 1, dim=1), reduction="sum",
                  log_target=True) * (1 * 1) / logits.numel()
    return loss_ce + (kl + loss_text + loss_image)


def ref_gauss_weights(n_epochs, mean, std) -> np.ndarray:
    """``get_gauss`` and the normalised weights (``promptsrc.py:265-270,358-360``)."""
    gauss = lambda x: (1 / (std * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((x - mean) / std) ** 2)  # noqa: E731
    weights = np.array([gauss(a) for a in range(1, n_epochs + 1)])
    return weights / sum(weights)


def build(depth_text=LAYERS, depth_image=LAYERS, n_ctx_text=2, n_ctx_image=3, **kwargs):
    torch.manual_seed(0)
    module = PromptSRC(CLASSES, clip=tiny_clip(), optimizer=SGD, prompts={"templates": TEMPLATES}, n_ctx_text=n_ctx_text,
                       n_ctx_image=n_ctx_image, prompt_depth_text=depth_text, prompt_depth_image=depth_image, **kwargs)
    ref = RefCustomCLIP(module.backbone.tokenizer, module.backbone.model, CLASSES, n_ctx_text, "a photo of a", module)
    return module, ref


def ref_parameters(ref: RefCustomCLIP) -> list[torch.nn.Parameter]:
    return [ref.ctx, *ref.text_vpt, *ref.image_vpt]


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("depth_text, depth_image", [(LAYERS, LAYERS), (2, 1), (1, 0)])
def test_logits_and_frozen_teacher_match_the_reference(depth_text, depth_image):
    module, ref = build(depth_text, depth_image)
    assert len(module.text_prompts) == depth_text - 1 and len(module.image_prompts) == depth_image
    torch.testing.assert_close(module.ctx.detach(), ref.init_ctx, atol=0, rtol=0)  # "a photo of a"'s first tokens
    x = images()
    module.eval()
    with torch.no_grad():
        outputs = ref(x, LABELS)
        torch.testing.assert_close(module(x), outputs[-1], atol=1e-5, rtol=0)
        torch.testing.assert_close(module.teacher_text_features(), outputs[2], atol=1e-5, rtol=0)
        torch.testing.assert_close(sum(module.src_losses(x, LABELS).values()), ref_loss(outputs), atol=1e-5, rtol=0)


def test_loss_and_learned_prompts_after_sgd_steps_match_the_reference():
    module, ref = build()
    ref_opt = torch.optim.SGD(ref_parameters(ref), lr=SGD["lr"], momentum=SGD["momentum"], weight_decay=SGD["weight_decay"])
    built = module.configure_optimizers()
    opt = built["optimizer"] if isinstance(built, dict) else built
    x = images()
    module.train()
    for step in range(3):
        loss = module.training_step((x, LABELS), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        expected = ref_loss(ref(x, LABELS))
        ref_opt.zero_grad()
        expected.backward()
        ref_opt.step()
        torch.testing.assert_close(loss.detach(), expected.detach(), atol=1e-5, rtol=0)
    parts = module.src_losses(x, LABELS)
    assert all(float(v.detach()) > 0 for v in parts.values())  # every term is live
    for (name, ours), theirs in zip(module.learned_parameters(), ref_parameters(ref)):
        torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-5, rtol=0, msg=name)
    start, _ = build()
    assert (module.image_prompts[2].detach() - start.image_prompts[2].detach()).abs().max() > 1e-3


@pytest.mark.parametrize("n_epochs, mean, std", [(4, 3.0, 1.0), (3, 15.0, 1.0), (5, 30.0, 30.0)])
def test_gaussian_prompt_aggregation_matches_the_reference(n_epochs, mean, std):
    """One SGD step per epoch; after each epoch's last batch the reference adds the weighted state dict and after the
    last epoch loads the sum (``promptsrc.py:320-335``, ``state_dict_weighting`` / ``state_dict_add``)."""
    np.testing.assert_allclose(gpa_weights(n_epochs, mean, std), ref_gauss_weights(n_epochs, mean, std), rtol=1e-12)
    module, ref = build(gpa_mean=mean, gpa_std=std)
    built = module.configure_optimizers()
    opt = built["optimizer"] if isinstance(built, dict) else built
    weights, previous, snapshots = ref_gauss_weights(n_epochs, mean, std), None, []
    x = images()
    for epoch in range(n_epochs):
        loss = module.training_step((x, LABELS), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        snapshots.append([p.detach().clone() for _, p in module.learned_parameters()])
        weighted = {i: t * weights[epoch] for i, t in enumerate(copy.deepcopy(snapshots[-1]))}
        previous = weighted if previous is None else {k: previous[k] + weighted[k] for k in previous}
        module.gpa_epoch_end(epoch, n_epochs)
        if epoch + 1 < n_epochs:  # the prompts change only after the last epoch
            for (_, p), s in zip(module.learned_parameters(), snapshots[-1]):
                torch.testing.assert_close(p.detach(), s, atol=0, rtol=0)
    for (name, ours), i in zip(module.learned_parameters(), range(len(previous))):
        torch.testing.assert_close(ours.detach(), previous[i].to(ours.dtype), atol=1e-5, rtol=0, msg=name)
    assert (module.ctx.detach() - snapshots[-1][0]).abs().max() > 1e-6 or n_epochs == 1


def test_paper_settings_are_the_config_defaults(tmp_path):
    """``vit_b16_c2_ep20_batch4_4+4ctx.yaml`` and ``trainers/imagenet_templates.py:3-64`` (60 templates)."""
    from conftest import compose

    model = compose(["model=clip_promptsrc", "seed=2"], root=tmp_path).model
    assert model._target_ in ("clipft.methods.PromptSRC", "clipft.methods.promptsrc.PromptSRC")
    assert (model.n_ctx_text, model.n_ctx_image, model.ctx_init) == (4, 4, "a photo of a")
    assert (model.prompt_depth_text, model.prompt_depth_image, model.text_loss_weight, model.image_loss_weight) == (9, 9, 25, 10)
    assert (model.gpa_mean, model.gpa_std, model.init_seed, model.optimizer.lr) == (15, 1, 2, 0.0025)
    templates = list(model.prompts.templates)
    assert len(templates) == 60 and templates[0] == "a photo of a {}." and templates[-1] == "itap of the {}."
