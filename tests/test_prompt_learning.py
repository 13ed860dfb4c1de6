"""CoOp: the context trains, the towers do not, and a template-initialised context starts at zero-shot."""

from __future__ import annotations

import pytest
import torch

from clipft.methods import CLIPZeroShot, CoOp

CLASSES = ["stop", "yield", "keep left"]
SGD = {"_target_": "torch.optim.SGD", "lr": 0.5}


def clip_cfg(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def images(n=6, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_context_from_a_template_starts_at_its_zero_shot_logits(tiny_clip_dir):
    coop = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init="a photo of a").eval()
    zeroshot = CLIPZeroShot(CLASSES, clip=clip_cfg(tiny_clip_dir), prompts={"templates": ["a photo of a {}."]}).eval()
    with torch.no_grad():
        torch.testing.assert_close(coop(images()).softmax(-1), zeroshot(images()).softmax(-1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("class_specific", [False, True])
def test_only_the_context_trains_and_the_loss_drops(tiny_clip_dir, class_specific):
    # init_seed: one draw whatever ran before (the default draws from the global RNG, which test order moves)
    coop = CoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init=None, n_ctx=4, class_specific=class_specific, init_seed=0)
    assert coop.ctx.shape[:-1] == ((3, coop.n_ctx) if class_specific else (coop.n_ctx,))
    frozen = {n: p.clone() for n, p in coop.backbone.named_parameters()}
    ctx_before = coop.ctx.detach().clone()
    opt = coop.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == coop.ctx.numel()
    batch = (images(), torch.tensor([0, 1, 2, 0, 1, 2]))
    coop.train()
    losses = []
    for step in range(15):
        loss = coop.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert not torch.equal(ctx_before, coop.ctx.detach())
    assert all(torch.equal(frozen[n], p) for n, p in coop.backbone.named_parameters())


def test_coop_runs_on_the_dual_encoder_tokenizer(tmp_path):
    from clipft.models.towers import save_tiny_text_encoder

    clip = {"_target_": "clipft.models.DualEncoderBackbone",
            "image_tower": {"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
            "text_tower": {"name_or_path": str(save_tiny_text_encoder(tmp_path / "bert")), "max_length": 16},
            "embed_dim": 16, "image_size": 32}
    coop = CoOp(CLASSES, clip=clip, optimizer=SGD, ctx_init="a photo of a").eval()
    assert coop.n_ctx >= 4
    with torch.no_grad():
        assert coop(images(2)).shape == (2, 3)


def test_coop_runs_on_open_clip_and_starts_at_zero_shot(tmp_path):
    from clipft.models.open_clip_backbone import save_tiny_open_clip

    clip = {"_target_": "clipft.models.OpenCLIPBackbone", "model_name": str(save_tiny_open_clip(tmp_path / "oc"))}
    coop = CoOp(CLASSES, clip=clip, optimizer=SGD, ctx_init="a photo of a").eval()
    zeroshot = CLIPZeroShot(CLASSES, clip=clip, prompts={"templates": ["a photo of a {}."]}).eval()
    with torch.no_grad():
        torch.testing.assert_close(coop(images()).softmax(-1), zeroshot(images()).softmax(-1), atol=1e-5, rtol=1e-4)


def test_cocoop_starts_at_zero_shot_and_conditions_the_prompts_on_each_image(tiny_clip_dir):
    from clipft.methods import CoCoOp

    # meta_net_init=zero: clipft's variant (the reference's nn.Linear init does not start at zero-shot)
    cocoop = CoCoOp(CLASSES, clip=clip_cfg(tiny_clip_dir), optimizer=SGD, ctx_init="a photo of a", meta_net_init="zero")
    zeroshot = CLIPZeroShot(CLASSES, clip=clip_cfg(tiny_clip_dir), prompts={"templates": ["a photo of a {}."]}).eval()
    with torch.no_grad():
        torch.testing.assert_close(cocoop.eval()(images()).softmax(-1), zeroshot(images()).softmax(-1), atol=1e-5, rtol=1e-4)
    opt = cocoop.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    cocoop.train()
    for step in range(3):
        loss = cocoop.training_step((images(), torch.tensor([0, 1, 2, 0, 1, 2])), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        text = cocoop.eval().conditioned_text_features(cocoop.backbone.encode_image(images(2)))
    assert not torch.allclose(text[0], text[1])  # two images, two sets of class prompts
