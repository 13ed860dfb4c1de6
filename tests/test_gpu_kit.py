"""The GPU kit's switches, checked on CPU: ``model.compile``, open_clip gradient checkpointing, 8-bit AdamW's gate."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

from clipft import registry
from clipft.errors import ConfigError
from clipft.methods.compile import compile_options, compile_towers
from clipft.pipeline.building import build_model
from clipft.utils import safe_targets
from clipft.utils.safe_targets import (
    SAFE_TARGETS,
    UntrustedCheckpointError,
    check_optimizer_installed,
    check_target_allowed,
    register_optional_optimizers,
)

TINY_CLIP = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": 8}}
BNB = "bitsandbytes.optim.AdamW8bit"


def flyp_config(**extra) -> OmegaConf:
    model = {"_target_": "clipft.methods.ContrastiveFineTune", "clip": TINY_CLIP,
             "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-4}, **extra}
    return OmegaConf.create({"model": model})


def built(cfg) -> torch.nn.Module:
    torch.manual_seed(0)  # the random tiny CLIP: the same weights every build
    return build_model(cfg, ["stop", "yield", "keep left"]).eval()


# ---------------------------------------------------------------------------- model.compile
@pytest.mark.parametrize(("value", "expected"), [(None, None), (False, None), (True, {}), ("max-autotune", {"mode": "max-autotune"}),
                                                 ({"backend": "aot_eager"}, {"backend": "aot_eager"})])
def test_compile_options(value, expected):
    assert compile_options(value) == expected


@pytest.mark.parametrize("bad", [1, {"modes": "x"}, ["default"]])
def test_bad_compile_value_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="model.compile"):
        compile_options(bad)


def _compiled_matches_eager(backend_options) -> None:
    eager = built(flyp_config())
    compiled = built(flyp_config(compile=backend_options))
    assert compiled.backbone.image_tower._compiled_call_impl is not None
    assert compiled.backbone.text_tower._compiled_call_impl is not None
    assert eager.backbone.image_tower._compiled_call_impl is None
    assert set(compiled.state_dict()) == set(eager.state_dict())  # checkpoints keep their keys
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(compiled(images), eager(images), atol=1e-5, rtol=1e-5)


def test_model_compile_traces_the_towers_and_keeps_the_logits():
    """``aot_eager``: torch.compile's graph capture and autograd tracing, without generating C++ kernels (fast)."""
    torch._dynamo.reset()
    _compiled_matches_eager({"backend": "aot_eager"})


@pytest.mark.slow
def test_model_compile_inductor_logits_equal_eager():
    """``model.compile=true``: inductor (C++ kernels on CPU; tens of seconds)."""
    torch._dynamo.reset()
    _compiled_matches_eager(True)


def test_compile_needs_a_backbone():
    with pytest.raises(ConfigError, match="no backbone"):
        compile_towers(torch.nn.Linear(2, 2), {})


# ---------------------------------------------------------------------------- open_clip gradient checkpointing
def test_open_clip_gradient_checkpointing_recomputes_blocks_with_the_same_gradients(tmp_path):
    pytest.importorskip("open_clip")
    from clipft.models.open_clip_backbone import OpenCLIPBackbone, save_tiny_open_clip

    folder = save_tiny_open_clip(tmp_path / "oc")
    grads, calls = [], []
    for flag in (False, True):
        backbone = OpenCLIPBackbone(str(folder), gradient_checkpointing=flag)
        assert backbone.model.transformer.grad_checkpointing is flag
        block = backbone.model.transformer.resblocks[0]
        handle = block.register_forward_pre_hook(lambda *_: calls.append(flag))  # recompute may stop before the end
        tokens = backbone.tokenize(["a stop sign", "a yield sign"])
        images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        loss = (backbone.encode_image(images) @ backbone.encode_text(**tokens).t()).sum()
        loss.backward()
        handle.remove()
        grads.append(block.mlp.c_fc.weight.grad.clone())
    assert calls.count(False) == 1 and calls.count(True) == 2  # checkpointed: the block runs again in backward
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- 8-bit AdamW
def test_bitsandbytes_optimizer_is_allowed_in_checkpoints_only_when_installed(monkeypatch):
    installed = importlib.util.find_spec("bitsandbytes") is not None
    assert (BNB in SAFE_TARGETS) is installed
    if not installed:
        with pytest.raises(UntrustedCheckpointError):
            check_target_allowed(BNB, "hyper_parameters.optimizer._target_", "run.ckpt")
    try:
        assert register_optional_optimizers(find_spec=lambda name: object()) == [BNB]
        assert BNB in SAFE_TARGETS
        assert BNB in registry.paths("optimizer")
        check_target_allowed(BNB, "hyper_parameters.optimizer._target_", "run.ckpt")
    finally:
        if not installed:
            registry.unregister_path(BNB)
    assert register_optional_optimizers(find_spec=lambda name: None) == []


def test_missing_bitsandbytes_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setattr(safe_targets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as caught:
        check_optimizer_installed(BNB)
    message = str(caught.value)
    assert "pip install bitsandbytes" in message and "model.optimizer._target_" in message and "\n" not in message
    check_optimizer_installed("torch.optim.AdamW")  # torch's own: nothing to install
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):  # the pipeline checks before building
        build_model(flyp_config(optimizer={"_target_": BNB, "lr": 1e-4}), ["a", "b"])
