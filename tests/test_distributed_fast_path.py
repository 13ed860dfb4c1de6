"""GPU fast-path choices, exercised on CPU: fused AdamW is picked from the module's device."""

from __future__ import annotations

import torch

from clipft.methods import ContrastiveFineTune
from clipft.methods.fast_path import with_fused_optimizer
from clipft.methods.prompt_tokens import PromptTokenCache

ADAMW = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.05}


def _module() -> ContrastiveFineTune:
    return ContrastiveFineTune(
        class_names=["stop", "yield", "parking"],
        clip={"_target_": "clipft.models.HFCLIPBackbone", "config": {}},
        optimizer=ADAMW,
        scheduler=None,
    )


def _optimizer(opt):
    return opt["optimizer"] if isinstance(opt, dict) else opt


def test_fused_adamw_only_for_cuda_and_never_over_an_explicit_choice():
    assert with_fused_optimizer(ADAMW, "cuda")["fused"] is True
    assert "fused" not in with_fused_optimizer(ADAMW, "cpu")
    assert with_fused_optimizer({**ADAMW, "fused": False}, "cuda:0")["fused"] is False
    assert "fused" not in with_fused_optimizer({**ADAMW, "foreach": True}, "cuda")
    assert "fused" not in with_fused_optimizer({"_target_": "torch.optim.SGD", "lr": 0.1}, "cuda")


def test_module_on_cuda_asks_for_fused_adamw_and_on_cpu_for_the_default(monkeypatch):
    import clipft.methods.classification as classification

    module = _module()
    assert not _optimizer(module.configure_optimizers()).defaults.get("fused")
    seen = []
    real = classification.build_optimizer
    monkeypatch.setattr(classification, "build_optimizer", lambda cfg, groups: seen.append(cfg) or real(ADAMW, groups))
    module._device = torch.device("cuda", 0)  # where Lightning's model_to_device leaves it before configure_optimizers
    module.configure_optimizers()  # (this CPU-only torch cannot construct a fused CUDA optimizer itself)
    assert seen and seen[-1]["fused"] is True and seen[-1]["_target_"] == "torch.optim.AdamW"


def test_class_prompts_are_tokenised_once_across_training_steps(monkeypatch):
    module = _module()
    calls = []
    tokenize = module.backbone.tokenize
    monkeypatch.setattr(module.backbone, "tokenize", lambda texts, device=None: calls.append(list(texts)) or tokenize(texts, device))
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    first = module.training_step((images, labels), 0)
    second = module.training_step((images, labels), 1)
    assert len(calls) == 1, f"tokenised {len(calls)} times in 2 steps"
    assert torch.isfinite(first) and torch.isfinite(second)
    fresh = module.backbone.encode_text(**tokenize(module.prompt_set.training_prompts("first", None)))
    torch.testing.assert_close(module.encode_prompts(module.prompt_set.training_prompts("first", None)), fresh)


def test_token_cache_keys_on_prompts_and_device_and_stays_bounded():
    class Backbone:
        def tokenize(self, texts, device=None):
            return {"input_ids": torch.tensor([len(t) for t in texts], device=device)}

    cache, backbone = PromptTokenCache(max_entries=2), Backbone()
    a = cache.get(backbone, ["ab", "c"], "cpu")
    assert cache.get(backbone, ["ab", "c"], "cpu") is a and cache.misses == 1
    assert cache.get(backbone, ["c", "ab"], "cpu")["input_ids"].tolist() == [1, 2]
    assert cache.get(backbone, ["ab", "c"], "meta") is not a
    assert len(cache._entries) == 2 and cache.misses == 3
