"""EMAWeights: the average itself, validation on the average, checkpoints, resuming."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clipft.callbacks import EMAWeights
from clipft.callbacks.ema import ema_average
from clipft.errors import ConfigError
from clipft.methods import ClassificationModule


class TinyClassifier(ClassificationModule):
    """Any ClassificationModule (no CNN specifics): Linear + BatchNorm, so buffers are averaged too."""

    def __init__(self, class_names=("a", "b"), optimizer=None):
        super().__init__(list(class_names), optimizer or {"_target_": "torch.optim.SGD", "lr": 0.5})
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return self.classification_loss(self(batch[0]), batch[1])


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_update_is_the_hand_computed_average():
    from torch.optim.swa_utils import AveragedModel

    module = TinyClassifier()
    ema = EMAWeights(decay=0.75, warmup=False)
    average = AveragedModel(module, use_buffers=True, avg_fn=ema._kwargs["avg_fn"])  # what Lightning's setup builds
    w = module.net[0].weight
    with torch.no_grad():
        w.fill_(3.0)
        module.net[1].num_batches_tracked.fill_(7)
    average.update_parameters(module)  # the first update copies
    with torch.no_grad():
        w.fill_(5.0)
    average.update_parameters(module)
    assert torch.allclose(average.module.net[0].weight, torch.full_like(w, 0.75 * 3 + 0.25 * 5))
    with torch.no_grad():
        w.fill_(1.0)
        module.net[1].num_batches_tracked.fill_(9)
    average.update_parameters(module)
    assert torch.allclose(average.module.net[0].weight, torch.full_like(w, 0.75 * 3.5 + 0.25 * 1))
    assert average.module.net[1].num_batches_tracked.item() == 9  # integer buffers are copied, not averaged
    warm = ema_average(0.999, warmup=True)
    one, zero = torch.ones(3), torch.zeros(3)
    assert torch.allclose(warm(zero, one, torch.tensor(1)), torch.full((3,), 0.9))  # d = 1/10 after the copy
    assert torch.allclose(warm(zero, one, torch.tensor(11)), torch.full((3,), 1 - 11 / 20))  # d = (1+10)/(10+10)


class WeightsSeenInValidation(L.Callback):
    """Records the module's weights in validation and in the training step right after it."""

    def __init__(self, ema: EMAWeights) -> None:
        self.ema_cb = ema
        self.in_validation: torch.Tensor | None = None
        self.checks: list[tuple[bool, bool]] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.global_step > 0 and batch_idx == 0:
            self.in_validation = pl_module.net[0].weight.detach().clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.in_validation is not None and batch_idx == 0:  # right after a validation run
            average = self.ema_cb.averaged_state()["net.0.weight"]
            self.checks.append((torch.equal(self.in_validation, average),  # validation ran on the average
                                not torch.equal(pl_module.net[0].weight, average)))  # training goes on with the raw weights
            self.in_validation = None


def test_validation_and_checkpoints_use_the_average_and_resume_restores_both(tmp_path):
    torch.manual_seed(0)
    module = TinyClassifier()
    ema = EMAWeights(decay=0.9, warmup=False)
    seen = WeightsSeenInValidation(ema)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)  # saves each epoch (save_top_k=0 would save last only at train end, after the average is copied in)

    def trainer(epochs, *callbacks):
        return L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=list(callbacks), default_root_dir=tmp_path)

    trainer(3, ema, seen, ckpt).fit(module, data(), data())
    assert ema.num_updates == 3 * 4  # one per optimizer step (the first copies the weights)
    assert seen.checks == [(True, True), (True, True)]

    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    average = ema.averaged_state()
    for key, value in average.items():
        assert torch.equal(saved["state_dict"][key], value), key
    raw = saved["current_model_state"]
    assert not torch.equal(raw["net.0.weight"], saved["state_dict"]["net.0.weight"])
    assert torch.equal(module.net[0].weight, average["net.0.weight"])  # the final model is the average

    # resuming: the training weights come back as the module's, the average as the callback's
    class Stop(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.raw = pl_module.net[0].weight.detach().clone()
            self.average = fresh.averaged_state()["net.0.weight"].clone()
            raise KeyboardInterrupt

    fresh, stop = EMAWeights(decay=0.9, warmup=False), Stop()
    resumed = TinyClassifier()
    try:
        trainer(4, fresh, stop).fit(resumed, data(), data(), ckpt_path=tmp_path / "last.ckpt")
    except (KeyboardInterrupt, SystemExit):
        pass
    assert torch.equal(stop.raw, raw["net.0.weight"]) and torch.equal(stop.average, saved["state_dict"]["net.0.weight"])
    assert fresh.num_updates == ema.num_updates


def test_bad_settings():
    with pytest.raises(ConfigError, match="decay"):
        EMAWeights(decay=1.0)
    with pytest.raises(ConfigError, match="every_n_steps"):
        EMAWeights(every_n_steps=0)
