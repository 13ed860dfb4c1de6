"""Sweeps: the sweep-summary Hydra callback, the Optuna search config and real multiruns."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import FAST, compose, run_script
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from clipft.pipeline.sweep_summary import WANDB_GROUP_ENV, SweepSummary


def fake_job(sweep: Path, num: int, overrides: list[str], val: float | None) -> Path:
    """A multirun job folder as Hydra + train.py leave it (val=None: the job left no metrics.json)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if val is not None:
        metrics = {"summary": {"best_val_acc": val, "test_accuracy": val - 0.1}, "epochs_trained": 2, "duration_s": 3.0}
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def job_config(sweep: Path, job: Path):
    return OmegaConf.create(
        {
            "task_name": "train",
            "optimized_metric": "best_val_acc",
            "hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}, "runtime": {"output_dir": str(job)}},
        }
    )


def read_summary(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "sweep_summary.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_summary_ranks_jobs_and_keeps_the_failed_one(tmp_path, monkeypatch):
    monkeypatch.delenv(WANDB_GROUP_ENV, raising=False)
    sweep = tmp_path / "multirun" / "2026-01-01_00-00-00"
    common = ["trainer.max_epochs=2"]
    fake_job(sweep, 0, ["model.optimizer.lr=1e-5", *common], 0.70)
    fake_job(sweep, 1, ["model.optimizer.lr=5e-6", *common], 0.90)
    failed = fake_job(sweep, 2, ["model.optimizer.lr=-1", *common], None)
    status = {"status": "FAILED", "error": "ConfigError: lr must be positive"}  # as JobStatusRecorder writes it
    (failed / "job_status.json").write_text(json.dumps(status))
    SweepSummary().on_job_end(job_config(sweep, failed), JobReturn(status=JobStatus.FAILED))

    rows = read_summary(sweep)
    assert [r["job"] for r in rows] == ["1", "0", "2"]  # best first, failed last
    assert [r["rank"] for r in rows[:2]] == ["1", "2"] and rows[2]["status"] == "failed"
    assert "lr must be positive" in rows[2]["error"]
    assert rows[0]["overrides"] == "model.optimizer.lr=5e-6"  # only the swept key
    md = (sweep / "sweep_summary.md").read_text()
    assert "3 job(s), 2 finished" in md and "lr must be positive" in md


def test_summary_follows_the_configured_metric_and_mode(tmp_path):
    sweep = tmp_path / "s"
    fake_job(sweep, 0, ["a=1"], 0.9)
    fake_job(sweep, 1, ["a=2"], 0.5)
    SweepSummary(metric="test_accuracy", mode="min").write(sweep, "test_accuracy")
    rows = read_summary(sweep)
    assert [r["job"] for r in rows] == ["1", "0"] and "test_accuracy" in rows[0]


def test_job_start_names_one_wandb_group_per_sweep_and_respects_the_users(tmp_path, monkeypatch):
    monkeypatch.delenv(WANDB_GROUP_ENV, raising=False)
    sweep = tmp_path / "multirun" / "2026-02-02_10-00-00"
    job = fake_job(sweep, 0, ["a=1"], None)
    SweepSummary().on_job_start(job_config(sweep, job), task_function=None)
    assert os.environ[WANDB_GROUP_ENV] == "train-2026-02-02_10-00-00"
    assert read_summary(sweep)[0]["status"] == "incomplete"  # listed before it finishes
    monkeypatch.setenv(WANDB_GROUP_ENV, "mine")
    SweepSummary().on_job_start(job_config(sweep, job), task_function=None)
    assert os.environ[WANDB_GROUP_ENV] == "mine"


def test_wandb_logger_takes_the_sweep_group(monkeypatch):
    monkeypatch.setenv(WANDB_GROUP_ENV, "train-sweep-x")
    cfg = compose(["logger=wandb"])
    assert cfg.logger.wandb.group == "train-sweep-x"
    monkeypatch.delenv(WANDB_GROUP_ENV)
    assert compose(["logger=wandb"]).logger.wandb.group is None


def test_optuna_search_config_composes():
    cfg = compose(["experiment=exp1", "hparams_search=optuna_lr"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.storage.startswith("sqlite:///") and sweeper.storage.endswith("/multirun/optuna/clipft-lr-wd.db")
    assert set(sweeper.params) == {"model.optimizer.lr", "model.optimizer.weight_decay"}
    assert sweeper.params["model.optimizer.lr"].startswith("tag(log")
    assert cfg.optimized_metric == "best_val_acc" and cfg.hydra.mode == RunMode.MULTIRUN


TINY_SWEEP = [*FAST, "trainer.max_epochs=1", "data.train_per_class=6", "data.test_per_class=2", "logger=none"]


@pytest.mark.slow
def test_two_value_multirun_writes_each_job_and_a_ranked_summary(tmp_path):
    proc = run_script("train.py", ["-m", "model.optimizer.lr=1e-3,3e-3", *TINY_SWEEP], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["config"]["model"]["optimizer"]["lr"] in (1e-3, 3e-3)
    rows = read_summary(sweep)
    assert sorted(r["overrides"] for r in rows) == ["model.optimizer.lr=0.001", "model.optimizer.lr=0.003"]
    vals = [float(r["best_val_acc"]) for r in rows]
    assert vals == sorted(vals, reverse=True) and all(r["status"] == "ok" for r in rows)


@pytest.mark.slow
def test_optuna_sweep_maximises_the_returned_metric_and_a_rerun_continues_the_study(tmp_path):
    import optuna

    args = ["-m", "hparams_search=optuna_lr", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2", *TINY_SWEEP]
    proc = run_script("train.py", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alembic" not in proc.stdout + proc.stderr and "💡" not in proc.stdout + proc.stderr  # quiet logs
    (sweep,) = [d for d in (tmp_path / "multirun").iterdir() if d.name != "optuna"]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    vals = [json.loads((sweep / j / "metrics.json").read_text())["summary"]["best_val_acc"] for j in ("0", "1")]
    assert result["best_value"] == pytest.approx(max(vals))
    rows = read_summary(sweep)
    assert len(rows) == 2 and all(float(r["model.optimizer.lr"]) > 0 for r in rows), "one column per swept value"

    # the study lives in a file outside the sweep dir; a trial whose process was killed stays RUNNING
    storage = f"sqlite:///{tmp_path / 'multirun' / 'optuna' / 'clipft-lr-wd.db'}"
    study = optuna.load_study(study_name="clipft-lr-wd", storage=storage)
    study.ask()  # what a kill mid-trial leaves behind
    again = run_script("train.py", [*args[:2], "hydra.sweeper.n_trials=3", *args[3:]], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 trials already ended, 1 to go" in again.stdout + again.stderr
    states = [t.state.name for t in optuna.load_study(study_name="clipft-lr-wd", storage=storage).trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1 and "RUNNING" not in states  # the killed trial, re-asked


def test_each_sweep_job_closes_its_wandb_run(tmp_path, monkeypatch):
    """Jobs share a process: an open W&B run would swallow the next job's logs."""
    import sys
    import types

    finished = []
    fake = types.SimpleNamespace(run=object(), finish=lambda: finished.append(True))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sweep = tmp_path / "s"
    job = fake_job(sweep, 0, ["a=1"], 0.5)
    SweepSummary().on_job_end(job_config(sweep, job), JobReturn(status=JobStatus.COMPLETED))
    assert finished == [True]
    fake.run = None
    SweepSummary().on_job_end(job_config(sweep, job), JobReturn(status=JobStatus.COMPLETED))
    assert finished == [True]


def test_readme_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose(["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=8",
                   "hydra.launcher.gpus_per_node=8", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=8"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.nodes == 2
    assert cfg.trainer.num_nodes == 2
