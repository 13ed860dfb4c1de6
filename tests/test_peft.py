"""PEFT fine-tuning: only adapter weights move, the merged inference checkpoint predicts as the
adapted model and loads without peft, and the trainable-parameter count is reported."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

pytest.importorskip("peft")

from test_clip_pipeline import train  # noqa: E402

from clipft.methods import ContrastiveFineTune, PEFTFineTune  # noqa: E402
from clipft.methods.loading import load_module  # noqa: E402

CLASSES = ["stop", "yield", "keep left"]
OPT = {"_target_": "torch.optim.AdamW", "lr": 5e-2}


def test_only_adapter_parameters_train_and_the_count_is_logged(tiny_clip_dir, caplog):
    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    with caplog.at_level(logging.INFO, logger="clipft.methods.peft_finetune"):
        module = PEFTFineTune(CLASSES, clip=clip, optimizer=OPT, adapt_towers=["image"])
    assert f"{module.trainable_parameters} trainable parameters" in caplog.text
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "vision_model" in n for n in trainable)
    before = {n: p.clone() for n, p in module.named_parameters()}
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    module.train()
    for step in range(3):
        loss = module.training_step((torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}
    assert moved and moved <= set(trainable)


def test_merged_inference_checkpoint_equals_the_adapted_model_and_needs_no_peft(tmp_path, tiny_clip_dir, monkeypatch):
    metrics = train(["model=clip_lora", f"model.clip.name_or_path={tiny_clip_dir}", "model.optimizer.lr=5e-2",
                     "model.scheduler.warmup_steps=1"], tmp_path)
    adapted = load_module(metrics["best_checkpoint"])
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    merged = load_module(metrics["inference_checkpoint"])
    assert type(merged) is ContrastiveFineTune
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), adapted(x), atol=1e-4, rtol=1e-4)
    assert not any("lora_" in k for k in merged.state_dict())
    start = ContrastiveFineTune(CLASSES, clip=merged.hparams["clip"], optimizer=OPT).eval()
    start.class_names = merged.class_names
    with torch.no_grad():  # the adapter did something: the merged weights are not the pretrained ones
        assert not torch.allclose(merged.backbone.encode_image(x), start.backbone.encode_image(x))


def test_lora_on_a_cnn_dual_encoder_wraps_its_pointwise_convolutions_and_merges_exactly(tmp_path):
    """sign-CLIP's towers: LoRA on the MobileNet's 1x1 convolutions and the text tower's attention."""
    from clipft.methods.peft_finetune import pointwise_convolutions
    from clipft.models.towers import save_tiny_text_encoder
    from clipft.utils.locate import locate

    clip = {"_target_": "clipft.models.DualEncoderBackbone",
            "image_tower": {"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
            "text_tower": {"name_or_path": str(save_tiny_text_encoder(tmp_path / "bert")), "max_length": 16},
            "embed_dim": 16, "image_size": 32}
    from peft.tuners.lora import LoraLayer

    from clipft.utils.instantiate import instantiate

    expected = pointwise_convolutions(instantiate(clip).image_tower)
    module = PEFTFineTune(CLASSES, clip=clip, optimizer=OPT).eval()
    wrapped = [n for n, m in module.backbone.image_tower.named_modules() if isinstance(m, LoraLayer)]
    assert sorted(wrapped) == sorted(expected) and len(wrapped) > 10  # every 1x1 conv and Linear, nothing else
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert any("visual" in n for n in trainable) and any("text" in n for n in trainable) and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    x = torch.randn(3, 3, 32, 32)
    module.prepare_for_inference()
    path, hparams, state = module.inference_export()
    merged = locate(path)(**hparams)
    merged.load_state_dict(state)
    merged.eval().prepare_for_inference()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), module(x), atol=1e-4, rtol=1e-4)
