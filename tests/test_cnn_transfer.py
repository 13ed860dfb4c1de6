"""CNNTransfer + TwoStageFinetuning: what is frozen when, BN modes, LR groups, checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from clipft.callbacks import TwoStageFinetuning
from clipft.errors import ConfigError
from clipft.methods import CNNTransfer
from clipft.methods.loading import load_module

CLASSES = ["stop", "yield", "keep_left"]


def tiny_module(**kwargs) -> CNNTransfer:
    args = {
        "class_names": CLASSES,
        "backbone": {"_target_": "clipft.models.build_torchvision_backbone", "name": "mobilenet_v3_small", "pretrained": False},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 3e-3, "weight_decay": 0.01},
        "scheduler": {"name": "cosine", "warmup_ratio": 0.1},
        "backbone_lr": 1e-3,
        "finetuning": {"head_epochs": 1, "unfreeze_blocks": "all"},
        "image_size": 32,
        "head_dropout": 0.0,
    }
    args.update(kwargs)
    return CNNTransfer(**args)


def loaders(n: int = 24, size: int = 32) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % len(CLASSES)
    images = torch.randn(n, 3, size, size, generator=g) * 0.2 + labels[:, None, None, None].float() - 1.0
    data = TensorDataset(images, labels)
    return DataLoader(data, batch_size=8, shuffle=True), DataLoader(data, batch_size=12)


def trainer(tmp_path: Path, epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        default_root_dir=tmp_path,
    )


class Probe(L.Callback):
    """Per epoch: which body blocks got gradients, the mode of frozen BNs, and the stage."""

    def __init__(self) -> None:
        self.grads: dict[int, list[bool]] = {}
        self.frozen_bn_training: dict[int, set[bool]] = {}
        self.head_grad: dict[int, bool] = {}
        self.stages: dict[int, str] = {}

    def on_after_backward(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        blocks = pl_module.finetuning_blocks()
        got = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters()) for b in blocks]
        self.grads.setdefault(epoch, got)
        self.head_grad[epoch] = pl_module.head[1].weight.grad is not None
        modes = self.frozen_bn_training.setdefault(epoch, set())
        for b in blocks:
            if not any(p.requires_grad for p in b.parameters()):
                modes.update(m.training for m in b.modules() if isinstance(m, _BatchNorm))
        stage_cb = next(c for c in trainer.callbacks if isinstance(c, TwoStageFinetuning))
        self.stages[epoch] = stage_cb.stage


def test_head_stage_then_full_finetune(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(finetuning={"head_epochs": 2, "unfreeze_blocks": "all"})
    body_before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    probe = Probe()
    train, val = loaders()
    t = trainer(tmp_path, epochs=3, callbacks=[probe])
    t.fit(module, train, val)

    assert probe.stages == {0: "head", 1: "head", 2: "finetune"}
    assert probe.grads[0] == [False] * len(module.finetuning_blocks())  # frozen body: no gradient at all
    assert probe.grads[1] == [False] * len(module.finetuning_blocks())
    assert all(probe.grads[2])  # stage 2: every block learns
    assert probe.head_grad == {0: True, 1: True, 2: True}
    assert probe.frozen_bn_training[0] == {False}  # BN of frozen blocks in eval, also after validation
    assert probe.frozen_bn_training[1] == {False}
    assert probe.frozen_bn_training[2] == set()
    # the body changed only in stage 2; frozen BN statistics were not touched in stage 1
    body_after = module.backbone.state_dict()
    assert any(not torch.equal(body_before[k], body_after[k]) for k in body_before if "running_mean" in k)


def test_frozen_body_is_untouched_during_head_epochs(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(finetuning={"head_epochs": 5, "unfreeze_blocks": "all"})
    body_before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    head_before = module.head[1].weight.detach().clone()
    train, val = loaders()
    trainer(tmp_path, epochs=2).fit(module, train, val)
    for key, value in module.backbone.state_dict().items():  # weights, BN stats, even weight decay: unchanged
        assert torch.equal(value, body_before[key]), key
    assert not torch.equal(module.head[1].weight, head_before)


def test_partial_unfreeze_trains_only_the_last_blocks(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(finetuning={"head_epochs": 0, "unfreeze_blocks": 2})
    probe = Probe()
    train, val = loaders(n=12)
    trainer(tmp_path, epochs=1, callbacks=[probe]).fit(module, train, val)
    n = len(module.finetuning_blocks())
    assert probe.stages == {0: "finetune"}
    assert probe.grads[0] == [False] * (n - 2) + [True, True]
    assert probe.frozen_bn_training[0] == {False}


def test_optimizer_has_head_and_body_lrs_from_the_start():
    module = tiny_module()
    module.trainer = None  # configure_optimizers outside a Trainer uses 1 total step
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    lrs = {g["name"]: g["initial_lr"] if "initial_lr" in g else g["lr"] for g in opt.param_groups}
    assert lrs["head"] == pytest.approx(3e-3) and lrs["backbone"] == pytest.approx(1e-3)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(module.parameters()))  # frozen blocks are in the optimizer, ready to unfreeze
    default = tiny_module(backbone_lr=None).part_learning_rates()
    assert default["backbone"] == pytest.approx(3e-4)


def test_checkpoint_reloads_without_the_pretrained_file(tmp_path):
    from clipft.models import build_torchvision_backbone

    weights = tmp_path / "weights.pt"
    torch.save(build_torchvision_backbone("mobilenet_v3_small").model.state_dict(), weights)
    backbone = {"_target_": "clipft.models.build_torchvision_backbone", "name": "mobilenet_v3_small", "pretrained": str(weights)}
    module = tiny_module(backbone=backbone)
    train, val = loaders(n=12)
    t = trainer(tmp_path, epochs=1)
    t.fit(module, train, val)
    ckpt = tmp_path / "m.ckpt"
    t.save_checkpoint(ckpt)
    weights.unlink()  # an evaluation machine without the weights file
    loaded = load_module(ckpt)
    assert isinstance(loaded, CNNTransfer)
    module.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), module(x))
    assert loaded.preprocessing["image_size"] == 32
    assert loaded.preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    a = tiny_module().eval()
    b = tiny_module(channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-4)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="head_epochs"):
        tiny_module(finetuning={"head_epochs": -1})
    with pytest.raises(ConfigError, match="unfreeze_blocks"):
        tiny_module(finetuning={"head_epochs": 1, "unfreeze_blocks": "top"})
    with pytest.raises(ConfigError, match="head_dropout"):
        tiny_module(head_dropout=1.5)
    with pytest.raises(ConfigError, match="backbone_lr"):
        tiny_module(backbone_lr=-1.0)


def test_stage_callback_needs_a_module_with_blocks(tmp_path):
    from clipft.methods import ClassificationModule

    class NoBlocks(ClassificationModule):
        def __init__(self):
            super().__init__(CLASSES, {"_target_": "torch.optim.AdamW", "lr": 1e-3})
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return self.classification_loss(self(batch[0]), batch[1])

    train, val = loaders(n=8)
    with pytest.raises(ConfigError, match="finetuning_blocks"):
        trainer(tmp_path, epochs=1, callbacks=[TwoStageFinetuning(1)]).fit(NoBlocks(), train, val)
