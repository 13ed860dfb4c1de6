"""A researcher's day without friction: the LR finder runs its whole search and records it, the results
table tells sweep runs and debug runs apart, errors are printed once, loaders fit the machine's cores,
the figures say what they show, and W&B names runs by what was swept. All in-process and small."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clipft.errors import ConfigError


# ---------------------------------------------------------------------------- LR finder
class TinyModule(L.LightningModule):
    """A linear classifier with clipft's shape of optimiser: ``lr`` attribute, warm-up schedule."""

    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Linear(8, 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 5))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def tiny_loader(batches: int = 14) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * batches, 8, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()), batch_size=4)


def fit_with_finder(tmp_path: Path, **finder_kwargs):
    from lightning.pytorch.loggers import CSVLogger

    from clipft.callbacks.lr_finder import LearningRateFinder

    torch.manual_seed(0)
    finder = LearningRateFinder(min_lr=1e-6, max_lr=1e-1, **{"num_training_steps": 40, "early_stop_threshold": None,
                                                             **finder_kwargs})
    logger = CSVLogger(tmp_path / "csv", name="", version="")
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", callbacks=[finder], logger=logger, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    model = TinyModule()
    trainer.fit(model, train_dataloaders=tiny_loader())
    return trainer, model, finder


def test_lr_finder_runs_its_whole_search_past_max_epochs_and_records_it(tmp_path):
    """max_epochs=1 with 14 batches an epoch: Lightning's search stopped after 14 steps; all 40 now, then a record
    beside config.yaml, a plot, the logger's hyperparameters, metrics.json's ``lr_finder`` and the rebuilt schedule."""
    from clipft.evaluation.artefacts import write_run_artefacts

    trainer, model, finder = fit_with_finder(tmp_path)
    record = json.loads((tmp_path / "lr_finder.json").read_text())
    assert record["steps"] == 40 and record["stopped"] == "completed", record["steps"]
    assert record["lr"] == pytest.approx(model.lr) and record["configured_lr"] == 1e-3 != record["lr"]
    assert len(record["curve"]["lr"]) == 40 and (tmp_path / "plots" / "lr_finder.png").stat().st_size > 0
    assert trainer.current_epoch == 1 and trainer.global_step == 14, "the run itself still trains max_epochs=1"
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == [pytest.approx(model.lr)], "schedule rebuilt"
    hparams = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert hparams["lr_finder/lr"] == pytest.approx(model.lr)

    metrics = write_run_artefacts(tmp_path, SimpleNamespace(), SimpleNamespace(class_names=[]), {"summary": {}}, trainer)
    assert metrics["lr_finder"]["lr"] == pytest.approx(model.lr) and "curve" not in metrics["lr_finder"]
    assert metrics["summary"]["lr_finder_lr"] == pytest.approx(model.lr)
    assert metrics["artefacts"]["lr_finder"] == "plots/lr_finder.png"


def _finder_with(losses: list[float]):
    lrs = [1e-6 * 1.3**i for i in range(len(losses))]
    return SimpleNamespace(results={"lr": lrs, "loss": losses}, suggestion=lambda: lrs[len(losses) // 2])


@pytest.mark.parametrize(
    ("losses", "threshold", "message"),
    [([1.0] * 14, None, "ended after 14 of 100 steps .* without the loss diverging"),
     ([1.0, 0.9, 0.9, 0.95, 9.0], 4.0, "stopped after 5 of 100 steps .* too early"),
     ([1.0 - 0.01 * i for i in range(30)] + [9.0], 4.0, "stopped after 31 of 200 steps .* too early")],
)
def test_a_search_that_ended_early_is_refused_in_one_line(losses, threshold, message):
    from clipft.callbacks.lr_finder import check_search, search_record

    asked = 200 if len(losses) == 31 else 100
    record = search_record(_finder_with(losses), 1e-3, asked, threshold)
    with pytest.raises(ConfigError, match=message) as caught:
        check_search(record)
    assert "\n" not in str(caught.value)


def test_a_search_that_diverged_late_is_accepted():
    from clipft.callbacks.lr_finder import check_search, search_record

    record = search_record(_finder_with([1.0 - 0.005 * i for i in range(80)] + [9.0]), 1e-3, 100, 4.0)
    assert record["stopped"] == "diverged" and record["steps"] == 81
    check_search(record)


def test_lr_finder_config_records_the_plot_switch():
    from conftest import compose

    assert compose(["callbacks=[default,lr_finder]", "plots=false"]).callbacks.lr_finder.plot is False


# ---------------------------------------------------------------------------- errors, loaders
def test_an_error_is_printed_once_and_still_reaches_the_log_file(tmp_path, capsys):
    """It was printed twice: a ``[clipft][ERROR]`` console log line, then ``clipft error:``."""
    import io

    from omegaconf import OmegaConf

    from clipft.pipeline.failures import report_failure

    root = logging.getLogger()
    console, log_file = io.StringIO(), tmp_path / "train.log"
    handlers = [logging.StreamHandler(console), logging.FileHandler(log_file)]
    for handler in handlers:
        root.addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exited:
            report_failure(ConfigError("data.batch_size=0 is not allowed"), OmegaConf.create({}))
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
    assert exited.value.code == 1
    assert capsys.readouterr().err.splitlines() == ["clipft error: data.batch_size=0 is not allowed"]
    assert console.getvalue() == "", "no second copy on the console"
    assert "ConfigError: data.batch_size=0 is not allowed" in log_file.read_text()


def test_loader_workers_default_to_the_cores_there_are(monkeypatch):
    """``num_workers: 4`` on a 2-core machine: PyTorch warned, once per loader, that 4 is too many."""
    import warnings

    from conftest import compose

    from clipft.pipeline import cli

    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cli.default_loader_workers() == 2
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert cli.default_loader_workers() == 4
    monkeypatch.undo()

    monkeypatch.delenv(cli.LOADER_WORKERS_ENV, raising=False)
    cli.set_default_loader_workers()
    workers = compose(["data=traffic_signs"]).data.num_workers
    assert isinstance(workers, int) and workers == cli.default_loader_workers()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "This DataLoader will create 4 worker processes ..." would raise
        DataLoader(TensorDataset(torch.zeros(2)), num_workers=workers)
    monkeypatch.setenv(cli.LOADER_WORKERS_ENV, "3")
    assert compose(["data=traffic_signs"]).data.num_workers == 3, "an exported value wins"
    assert compose(["data=traffic_signs", "data.num_workers=1"]).data.num_workers == 1


# ---------------------------------------------------------------------------- figures
@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions draw, kept open instead of saved."""
    from clipft.evaluation import plots

    drawn = []

    def keep(fig, path, tight=True):
        drawn.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "save_figure", keep)
    yield drawn
    for fig in drawn:
        plots.plt.close(fig)


def test_training_curves_have_whole_epoch_ticks(figures, tmp_path):
    from clipft.evaluation.plots import plot_training_curves

    history = [{"epoch": e, "train/loss": 1.0 / (e + 1), "val/loss": 1.2 / (e + 1), "val/acc": 0.1 * e} for e in range(3)]
    plot_training_curves(history, tmp_path / "c.png")
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_metrics_summary_draws_ece_on_its_own_axis(figures, tmp_path):
    from clipft.evaluation.plots import plot_metrics_summary

    plot_metrics_summary({"accuracy": 0.9, "macro F1": 0.85, "ECE": 0.04}, tmp_path / "s.png")
    labelled = [ax for ax in figures[0].axes if ax.get_yticklabels()]
    names = [[t.get_text() for t in ax.get_yticklabels()] for ax in labelled]
    assert names == [["accuracy", "macro F1"], ["ECE"]]
    assert labelled[1].get_xlim()[1] < 0.5, "ECE on a scale of its own, not [0, 1.08] beside accuracies"


def test_the_confusion_matrix_names_its_split(figures, tmp_path):
    from clipft.evaluation.artefacts import write_run_artefacts

    report = {"confusion_matrix": [[2, 0], [1, 1]], "per_class": {"a": {"accuracy": 1.0, "support": 2}},
              "accuracy": 0.75}
    for split in ("val", "test"):
        write_run_artefacts(tmp_path, SimpleNamespace(), SimpleNamespace(class_names=["a", "b"]), {split: report},
                            split=split)
    titles = [ax.get_title() for fig in figures for ax in fig.axes if "Confusion" in ax.get_title()]
    assert len(titles) == 2 and "val" in titles[0] and "test" in titles[1], titles


# ---------------------------------------------------------------------------- W&B
def test_a_multirun_names_wandb_runs_by_the_swept_keys(monkeypatch, tmp_path):
    from clipft.loggers import wandb as wandb_logger

    assert wandb_logger.sweep_keys_of(["model.optimizer.lr=1e-4,1e-5", "trainer.max_epochs=3", "seed=range(0,3)"]) == {
        "model.optimizer.lr", "seed"}
    assert wandb_logger.sweep_keys_of([], {"model.optimizer.lr": "interval(1e-5, 1e-3)"}) == {"model.optimizer.lr"}
    job = ["model.optimizer.lr=1e-4", "trainer.max_epochs=3", "seed=1"]
    monkeypatch.setattr(wandb_logger, "multirun_sweep", lambda: ({"model.optimizer.lr", "seed"}, job))
    logger = wandb_logger.WandbLogger(name="sign", overrides="model.optimizer.lr=1e-4,trainer.max_epochs=3,seed=1",
                                      save_dir=str(tmp_path), offline=True)
    assert logger._wandb_init["name"] == "sign:model.optimizer.lr=1e-4,seed=1"
    monkeypatch.setattr(wandb_logger, "multirun_sweep", lambda: None)
    single = wandb_logger.WandbLogger(name="sign", overrides="trainer.max_epochs=3", save_dir=str(tmp_path), offline=True)
    assert single._wandb_init["name"] == "sign:trainer.max_epochs=3", "a single run keeps its overrides"


def test_wandb_config_holds_the_model_hparams_once(monkeypatch, tmp_path):
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    from clipft.loggers import WandbLogger

    logged = []
    monkeypatch.setattr(LightningWandbLogger, "log_hyperparams", lambda self, params, *a, **k: logged.append(params))
    logger = WandbLogger(name="r", save_dir=str(tmp_path), offline=True)
    config = {"model": {"optimizer": {"lr": 1e-3}, "clip": {"name": "x"}}, "trainer": {"max_epochs": 1}, "seed": 0}
    logger.log_hyperparams(config)  # clipft's run config (train.py)
    logger.log_hyperparams({"optimizer": {"lr": 1e-3}, "clip": {"name": "x"}})  # Lightning: the module's hparams
    logger.log_hyperparams({"lr_finder/lr": 3e-4, "optimizer": {"lr": 1e-3}})
    assert logged == [config, {"lr_finder/lr": 3e-4}]
