"""EMAWeights: the average itself, validation on the average, checkpoints, resuming."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clipft.callbacks import EMAWeights
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
    module = TinyClassifier()
    ema = EMAWeights(decay=0.75, warmup=False)
    w = module.net[0].weight
    with torch.no_grad():
        w.fill_(1.0)
    ema.update(module)  # first call copies
    with torch.no_grad():
        w.fill_(3.0)
        module.net[1].num_batches_tracked.fill_(7)
    ema.update(module)
    assert torch.allclose(ema.ema["net.0.weight"], torch.full_like(w, 0.75 * 1 + 0.25 * 3))
    with torch.no_grad():
        w.fill_(5.0)
    ema.update(module)
    assert torch.allclose(ema.ema["net.0.weight"], torch.full_like(w, 0.75 * 1.5 + 0.25 * 5))
    assert ema.ema["net.1.num_batches_tracked"].item() == 7  # integer buffers are copied
    warm = EMAWeights(decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)
    warm.num_updates = 10
    assert warm.current_decay() == pytest.approx(11 / 20)


class WeightsSeenInValidation(L.Callback):
    def __init__(self, ema: EMAWeights) -> None:
        self.ema_cb = ema
        self.matches: list[bool] = []
        self.after_validation: list[bool] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.ema_cb.ema is not None:
            self.matches.append(torch.equal(pl_module.net[0].weight, self.ema_cb.ema["net.0.weight"]))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch > 0 and batch_idx == 0:  # right after a validation run
            self.after_validation.append(not torch.equal(pl_module.net[0].weight, self.ema_cb.ema["net.0.weight"]))


def test_validation_and_checkpoints_use_the_average(tmp_path):
    torch.manual_seed(0)
    module = TinyClassifier()
    ema = EMAWeights(decay=0.9, warmup=False)
    seen = WeightsSeenInValidation(ema)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ema, seen, ckpt], default_root_dir=tmp_path,
    )
    trainer.fit(module, data(), data())
    assert ema.num_updates == 3 * 4  # one per optimizer step (the average starts at fit start)
    assert seen.matches and all(seen.matches)  # validation ran on the EMA weights
    assert seen.after_validation == [True, True]  # and training went on with the raw weights

    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for key, value in ema.ema.items():
        assert torch.equal(saved["state_dict"][key], value), key
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("EMAWeights"))
    raw = state["training_weights"]
    assert not torch.equal(raw["net.0.weight"], saved["state_dict"]["net.0.weight"])
    assert torch.equal(module.net[0].weight, ema.ema["net.0.weight"])  # the final model is the average

    # resuming: the module comes back with the EMA weights; the callback puts the raw ones back
    resumed = TinyClassifier()
    resumed.load_state_dict(saved["state_dict"])
    fresh = EMAWeights(decay=0.9, warmup=False)
    fresh.load_state_dict(state)
    fresh.on_fit_start(trainer, resumed)
    assert torch.equal(resumed.net[0].weight, raw["net.0.weight"])
    assert torch.equal(fresh.ema["net.0.weight"], saved["state_dict"]["net.0.weight"])
    assert fresh.num_updates == ema.num_updates


def test_bad_settings():
    with pytest.raises(ConfigError, match="decay"):
        EMAWeights(decay=1.0)
    with pytest.raises(ConfigError, match="every_n_steps"):
        EMAWeights(every_n_steps=0)
