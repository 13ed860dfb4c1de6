"""The deep-prompt capability of the backbone contract (clipft.models.contract.DeepPromptBackbone), the refusal of
image prompts on a backbone whose image tower takes none, and MaPLe / PromptSRC end to end through train.py.

The reference maths of both methods: tests/test_parity_maple.py and tests/test_parity_promptsrc.py.
"""

from __future__ import annotations

import pytest
import torch
from test_clip_pipeline import train
from test_parity_maple import images, tiny_clip

from clipft.callbacks.feature_bank import FeatureBankCallback
from clipft.errors import ConfigError
from clipft.methods.loading import load_module
from clipft.methods.maple import MaPLe
from clipft.methods.promptsrc import PromptSRC
from clipft.models import HFCLIPBackbone
from clipft.models.contract import DeepPromptBackbone, deep_prompt_support
from clipft.utils.instantiate import instantiate

CLASSES = ["stop", "yield", "keep_left"]
SGD = {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9}


@pytest.fixture(scope="module")
def hf_clip() -> HFCLIPBackbone:
    torch.manual_seed(0)
    return instantiate(tiny_clip()).eval()


@pytest.fixture(scope="module")
def dual_encoder_cfg(tmp_path_factory) -> dict:
    from clipft.models.towers import save_tiny_text_encoder

    bert = save_tiny_text_encoder(tmp_path_factory.mktemp("bert") / "bert")
    return {"_target_": "clipft.models.DualEncoderBackbone",
            "image_tower": {"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
            "text_tower": {"name_or_path": str(bert), "max_length": 16}, "embed_dim": 16, "image_size": 32}


# ---------------------------------------------------------------------------- the contract
def test_hf_clip_declares_its_layers_and_widths(hf_clip):
    assert isinstance(hf_clip, DeepPromptBackbone)
    assert deep_prompt_support(hf_clip) == {"text": 3, "image": 3}
    assert hf_clip.deep_prompt_widths() == {"text": 32, "image": 48}


def test_without_deep_prompts_the_paths_equal_the_plain_ones_and_hooks_do_not_leak(hf_clip):
    tokens = hf_clip.tokenize(["a stop sign", "yield"])
    table = hf_clip.token_embedding()(tokens["input_ids"])
    x = images(2)
    with torch.no_grad():
        plain_text, plain_image = hf_clip.encode_text(**tokens), hf_clip.encode_image(x)
        torch.testing.assert_close(hf_clip.encode_text_deep_prompts(table, tokens["input_ids"], tokens["attention_mask"], 1, []),
                                   plain_text, atol=1e-6, rtol=0)
        torch.testing.assert_close(hf_clip.encode_image_deep_prompts(x, []), plain_image, atol=0, rtol=0)
        prompted = hf_clip.encode_image_deep_prompts(x, [torch.randn(2, 48), torch.randn(2, 48)])
        deep_text = hf_clip.encode_text_deep_prompts(table, tokens["input_ids"], tokens["attention_mask"], 1, [torch.randn(2, 32)])
        assert (prompted - plain_image).abs().max() > 1e-4 and (deep_text - plain_text).abs().max() > 1e-4
        torch.testing.assert_close(hf_clip.encode_image(x), plain_image, atol=0, rtol=0)  # the hooks are gone
        torch.testing.assert_close(hf_clip.encode_text(**tokens), plain_text, atol=0, rtol=0)


def test_gradients_reach_every_layer_prompt(hf_clip):
    image_prompts = [torch.randn(2, 48, requires_grad=True) for _ in range(3)]
    text_prompts = [torch.randn(3, 32, requires_grad=True) for _ in range(2)]
    tokens = hf_clip.tokenize(["a stop sign", "yield"])
    table = hf_clip.token_embedding()(tokens["input_ids"])
    image = hf_clip.encode_image_deep_prompts(images(2), image_prompts)
    text = hf_clip.encode_text_deep_prompts(table, tokens["input_ids"], tokens["attention_mask"], 1, text_prompts)
    (image @ text.t()).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in image_prompts + text_prompts)
    with pytest.raises(ValueError, match="4 deep prompts for a tower of 3 layers"):
        hf_clip.encode_text_deep_prompts(table, tokens["input_ids"], tokens["attention_mask"], 1, text_prompts * 2)


# ---------------------------------------------------------------------------- the dual encoder (a CNN image tower)
def test_dual_encoder_refuses_image_prompts_and_names_the_text_only_variant(dual_encoder_cfg):
    backbone = instantiate(dual_encoder_cfg)
    assert backbone.deep_prompt_support() == {"text": 0, "image": 0} == deep_prompt_support(backbone)
    with pytest.raises(ConfigError, match=r"image tower takes none .*model.prompt_depth_image=0"):
        MaPLe(CLASSES, clip=dual_encoder_cfg, optimizer=SGD, prompt_depth=1)
    with pytest.raises(ConfigError, match=r"prompt_depth_image=9.*image tower takes none .*text-only variant \(model.prompt_depth_image=0\)"):
        PromptSRC(CLASSES, clip=dual_encoder_cfg, optimizer=SGD)
    with pytest.raises(ConfigError, match="text tower takes them at its input only .* set prompt_depth_text=1"):
        PromptSRC(CLASSES, clip=dual_encoder_cfg, optimizer=SGD, prompt_depth_image=0)
    text_only = PromptSRC(CLASSES, clip=dual_encoder_cfg, optimizer=SGD, prompt_depth_image=0, prompt_depth_text=1).eval()
    with torch.no_grad():
        assert text_only(images(2)).shape == (2, 3)
        assert torch.isfinite(sum(text_only.src_losses(images(2), torch.tensor([0, 2])).values()))


# ---------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method, overrides", [
    ("clip_maple", ["model.prompt_depth=2"]),
    ("clip_promptsrc", ["model.prompt_depth_text=2", "model.prompt_depth_image=2", "model.gpa_mean=1.0", "trainer.max_epochs=2",
                        "model.prompts.templates=['a photo of a {}.']"]),
])
def test_train_reload_and_predict(tmp_path, tiny_clip_dir, monkeypatch, method, overrides):
    """train.py on the synthetic signs with the tiny settings: the best checkpoint reloads as the method with its learned
    prompts and predicts what the trained module predicts; PromptSRC aggregates after the last batch of each epoch."""
    calls = []
    if method == "clip_promptsrc":
        original = PromptSRC.gpa_epoch_end

        def record(self, epoch, n_epochs):
            calls.append((epoch, n_epochs))
            original(self, epoch, n_epochs)

        monkeypatch.setattr(PromptSRC, "gpa_epoch_end", record)
    metrics = train([f"model={method}", f"model.clip.name_or_path={tiny_clip_dir}", "plots=false",
                     "model.optimizer.lr=0.05", "model.scheduler.warmup_epochs=0", *overrides], tmp_path)
    assert metrics["summary"]["test_accuracy"] is not None
    module = load_module(metrics["best_checkpoint"]).eval()
    fresh = type(module)(**module.hparams)
    learned = dict(module.extra_parameter_groups()["head"])
    start = dict(fresh.extra_parameter_groups()["head"])
    assert all(not torch.equal(learned[n], start[n]) for n in ("ctx", *[n for n in learned if "prompt" in n][:1]))
    module.prepare_for_inference()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        probs = module(x).softmax(-1)
        again = load_module(metrics["best_checkpoint"]).eval()
        again.prepare_for_inference()
        torch.testing.assert_close(again(x).softmax(-1), probs, atol=1e-6, rtol=0)
    assert probs.shape == (3, len(module.class_names))
    assert "image tower" in FeatureBankCallback.off_reason(module, None)  # a bank's rows would skip the image prompts
    assert calls == ([(0, 2), (1, 2)] if method == "clip_promptsrc" else [])


@pytest.mark.parametrize("cls, kwargs", [(MaPLe, {"prompt_depth": 2}), (PromptSRC, {"prompt_depth_text": 2, "prompt_depth_image": 2})])
def test_the_learned_prompts_score_novel_classes(monkeypatch, cls, kwargs):
    """Base-to-novel (clipft.methods.retarget): with the row this change proposes for RETARGET (every state entry is
    class-free; the prompt token embeddings are re-read), a trained class keeps its logit under a new class list."""
    from clipft.methods.retarget import RETARGET, Rule, _prompt_embeddings, method_name, retarget

    monkeypatch.setitem(RETARGET, method_name(cls.__new__(cls)), Rule((), "the learned prompts with the new class name",
                                                                      refresh=_prompt_embeddings))
    torch.manual_seed(1)
    module = cls(CLASSES, clip=tiny_clip(), optimizer=SGD, **kwargs).eval()
    with torch.no_grad():
        for _, p in module.extra_parameter_groups()["head"]:
            p.add_(0.05 * torch.randn_like(p))  # as if trained
        novel = retarget(module, ["no entry", "stop"]).eval()
        x = images(2)
        torch.testing.assert_close(novel(x)[:, 1], module(x)[:, 0], atol=1e-5, rtol=0)
