"""Habits users bring from lightning-hydra-template: debug= configs, trainer keys without "+",
Lightning's LR and batch-size finders, and eval.py taking the data of the checkpoint's run."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from conftest import compose, run_script

from clipft.errors import CheckpointError
from clipft.pipeline.run_data import with_data_of_checkpoint_run

SMALL = ["~callbacks.rich_progress_bar", "trainer.enable_model_summary=false", "data.train_per_class=12",
         "data.test_per_class=2"]


@pytest.mark.parametrize(
    ("debug", "expected"),
    [
        ("default", {"trainer.max_epochs": 1, "trainer.accelerator": "cpu", "trainer.detect_anomaly": True, "data.num_workers": 0}),
        ("fdr", {"trainer.fast_dev_run": True}),
        ("overfit", {"trainer.overfit_batches": 1, "data.shots": 1, "data.train_transform": "clip_eval",
                     "callbacks.early_stopping": None}),
        ("limit", {"trainer.limit_train_batches": 10, "trainer.max_epochs": 3}),
        ("profiler", {"trainer.profiler._target_": "lightning.pytorch.profilers.SimpleProfiler"}),
    ],
)
def test_debug_configs_compose(debug, expected):
    from omegaconf import OmegaConf

    cfg = compose([f"debug={debug}"])
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.run_name == "debug"
    loggers = cfg.hydra.job_logging.loggers
    assert cfg.hydra.job_logging.root.level == "INFO" and loggers.clipft.level == "DEBUG"
    assert all(loggers[name].level == "WARNING" for name in ("PIL", "matplotlib", "urllib3", "fsspec", "filelock"))


def test_debug_runs_land_in_outputs_debug(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFT_ROOT", str(tmp_path))
    run_dir = compose(["debug=fdr"]).hydra.run.dir
    assert run_dir.startswith(f"{tmp_path}/outputs/debug/") and "debug/debug" not in run_dir, run_dir


THIRD_PARTY_LINE = re.compile(r"^\[[^]]*\]\[(PIL|matplotlib|urllib3|fsspec|filelock|h5py|httpx|httpcore|asyncio|git)[.\]]")


def third_party_lines(text: str) -> list[str]:
    """Log lines of third-party libraries, and DEBUG lines of anything but clipft."""
    return [line for line in text.splitlines() if THIRD_PARTY_LINE.match(line)
            or ("][DEBUG] - " in line and not re.match(r"^\[[^]]*\]\[(clipft|__main__|hydra_plugins\.clipft)", line))]


def test_usual_trainer_keys_need_no_plus():
    cfg = compose(["trainer.fast_dev_run=true", "trainer.limit_train_batches=5", "trainer.overfit_batches=2",
                   "trainer.max_steps=7", "trainer.num_sanity_val_steps=0", "trainer.profiler=simple"])
    assert cfg.trainer.fast_dev_run and cfg.trainer.limit_train_batches == 5 and cfg.trainer.max_steps == 7


def test_debug_fdr_and_profiler_run_end_to_end(tmp_path):
    fdr = run_script("train.py", ["debug=fdr", *SMALL, f"hydra.run.dir={tmp_path / 'fdr'}"], cwd=tmp_path)
    assert fdr.returncode == 0, fdr.stderr[-2000:]
    metrics = json.loads((tmp_path / "fdr" / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 2 * 10 and metrics["best_checkpoint"] is None  # one test batch, no checkpoint
    # quiet: no PIL chunk / matplotlib font lines (the root logger at DEBUG printed ~20,000)
    assert third_party_lines(fdr.stdout + fdr.stderr) == [] and third_party_lines((tmp_path / "fdr" / "train.log").read_text()) == []
    profiled = run_script("train.py", ["debug=profiler", *SMALL, f"hydra.run.dir={tmp_path / 'prof'}"], cwd=tmp_path)
    assert profiled.returncode == 0, profiled.stderr[-2000:]
    for text in (profiled.stdout + profiled.stderr, (tmp_path / "prof" / "train.log").read_text()):
        report = text[text.index("FIT Profiler Report"):]  # printed when fit ends, as the config says
        assert "training_step" in report and "run_training_epoch" in report
    assert third_party_lines(profiled.stdout + profiled.stderr) == []


def test_debug_overfit_drives_the_training_loss_down(tmp_path):
    """The default model (tiny CLIP, FLYP loss) memorises the batch: train/loss approaches 0, as the config says."""
    result = run_script("train.py", ["debug=overfit", "plots=false", *SMALL,
                                     f"hydra.run.dir={tmp_path / 'o'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    losses = [h["train/loss"] for h in json.loads((tmp_path / "o" / "metrics.json").read_text())["history"]]
    # the default data reaches < 0.01 (the config says so); these 12-image classes draw other one-shot images: < 0.1
    assert len(losses) == 50 and losses[0] > 1.0 and losses[-1] < 0.1, losses


def test_lr_finder_sets_the_learning_rate_the_run_trains_with(tmp_path):
    result = run_script("train.py", ["callbacks=[default,lr_finder]", "callbacks.lr_finder.num_training_steps=20",
                                     "data.batch_size=8", "trainer.max_epochs=1", *SMALL[:2], "data.train_per_class=24",
                                     "data.test_per_class=2", f"hydra.run.dir={tmp_path / 'lr'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    found = [line for line in (result.stdout + result.stderr).splitlines() if "Learning rate set to" in line]
    assert found, "Lightning's LearningRateFinder ran and chose a rate"
    suggested = float(found[-1].rsplit(" ", 1)[1])
    ckpt = torch.load(tmp_path / "lr" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(suggested) != 1e-3
    assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(suggested)


def test_eval_takes_the_data_of_the_checkpoints_run(tmp_path):
    trained = run_script("train.py", ["data.num_classes=4", "trainer.max_epochs=1", *SMALL, f"hydra.run.dir={tmp_path / 'r'}"],
                         cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    ckpt = tmp_path / "r" / "checkpoints" / "best.ckpt"
    evaluated = run_script("eval.py", [f"ckpt_path={ckpt}", "data.eval_batch_size=3", f"hydra.run.dir={tmp_path / 'e'}"],
                           cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["config"]["data"]["num_classes"] == 4, "the run's 4-class data, not the default's 10"
    assert metrics["config"]["data"]["eval_batch_size"] == 3, "command-line data.* overrides still apply"
    assert metrics["test"]["num_samples"] == 4 * 2

    # the command line wins
    cfg = compose([f"ckpt_path={ckpt}", "data.num_classes=5"], config_name="eval")
    assert with_data_of_checkpoint_run(cfg, ["data=synthetic_signs"]).data.num_classes == 5
    # a config file may not choose the code: a foreign _target_ is refused
    run_cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    run_cfg["data"]["_target_"] = "os.system"
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(run_cfg))
    with pytest.raises(CheckpointError, match="os.system.*not one of clipft's datamodules"):
        with_data_of_checkpoint_run(compose([f"ckpt_path={ckpt}"], config_name="eval"), [])
