"""SigLIP fine-tuned with the objective it was pretrained with (model.loss=sigmoid), end to end."""

from __future__ import annotations

import pytest
import torch
from test_clip_pipeline import train

from clipft.methods import ContrastiveFineTune
from clipft.methods.loading import load_module
from clipft.models.hf_siglip import save_tiny_siglip


@pytest.fixture(scope="module")
def tiny_siglip_dir(tmp_path_factory):
    return save_tiny_siglip(tmp_path_factory.mktemp("siglip"))


def test_sigmoid_loss_trains_the_logit_bias_and_drops(tiny_siglip_dir):
    module = ContrastiveFineTune(["stop", "yield", "keep left"], loss="sigmoid", cls_weight=0.0,
                                 clip={"_target_": "clipft.models.HFSiglipBackbone", "name_or_path": str(tiny_siglip_dir)},
                                 optimizer={"_target_": "torch.optim.AdamW", "lr": 3e-3})
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    batch = (torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2]))
    bias = float(module.backbone.logit_bias)
    module.train()
    losses = []
    for step in range(8):
        loss = module.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] and float(module.backbone.logit_bias) != bias


def test_siglip_flyp_runs_through_train_py_and_reloads(tmp_path, tiny_siglip_dir):
    metrics = train(["clip_backbone@model.clip=siglip", f"model.clip.name_or_path={tiny_siglip_dir}", "model.loss=sigmoid",
                     "model.optimizer.lr=1e-3", "model.scheduler.warmup_steps=1"], tmp_path)
    module = load_module(metrics["best_checkpoint"])
    assert type(module.backbone).__name__ == "HFSiglipBackbone" and module.loss_kind == "sigmoid"
