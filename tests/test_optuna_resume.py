"""A resumed Optuna sweep repeats no trial: the sweeper's ask/tell loop run in-process with a trivial
objective, killed mid-trial, then rerun on the same SQLite study."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

optuna = pytest.importorskip("optuna")

PARAMS = {"model.optimizer.lr": "tag(log, interval(1e-7, 1e-3))", "model.optimizer.weight_decay": "interval(0.0, 0.3)"}


class Killed(BaseException):
    """What Ctrl-C does to the sweep: not an ``Exception``, so the sweeper does not catch it."""


class FakeLauncher:
    """Runs each job as ``-log10(lr) + wd``; raises Killed when job ``kill_at`` starts."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.jobs = kill_at, 0

    def launch(self, overrides, initial_job_idx):
        from types import SimpleNamespace

        returns = []
        for job in overrides:
            if self.jobs == self.kill_at:
                raise Killed
            self.jobs += 1
            values = dict(o.split("=", 1) for o in job)
            returns.append(SimpleNamespace(return_value=float(values["model.optimizer.weight_decay"])
                                           - float(values["model.optimizer.lr"])))
        return returns


def sweep(tmp_path, storage, n_trials: int, launcher: FakeLauncher) -> None:
    """One sweep process: a fresh seeded sampler and sweeper, as ``python train.py -m ...`` builds them."""
    from hydra_plugins.clipft_sweepers.resumable_optuna import ResumableOptunaSweeper

    sweeper = ResumableOptunaSweeper(
        sampler=optuna.samplers.TPESampler(seed=42, n_startup_trials=5), direction="maximize", storage=storage,
        study_name="s", n_trials=n_trials, n_jobs=1, max_failure_rate=0.0, search_space=None,
        custom_search_space=None, params=OmegaConf.create(PARAMS))
    impl = sweeper.sweeper
    impl.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    impl.launcher, impl.hydra_context, impl.job_idx = launcher, object(), 0
    sweeper.sweep([])


def trials(storage):
    return optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)


def test_a_sweep_killed_mid_trial_resumes_without_repeating_a_trial(tmp_path):
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    sweep(tmp_path, reference, 3, FakeLauncher())
    startup_points = [t.params for t in trials(reference)]
    assert len(startup_points) == 3 and all(t.state.name == "COMPLETE" for t in trials(reference))

    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    with pytest.raises(Killed):  # Ctrl-C during trial 1: it stays RUNNING in the study file
        sweep(tmp_path, storage, 3, FakeLauncher(kill_at=1))
    assert [t.state.name for t in trials(storage)] == ["COMPLETE", "RUNNING"]

    sweep(tmp_path, storage, 3, FakeLauncher())  # the same command again
    stored = trials(storage)
    complete = [t.params for t in stored if t.state.name == "COMPLETE"]
    assert complete == startup_points, "each start-up point once, in the uninterrupted study's order"
    assert [t.state.name for t in stored] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert stored[1].params == stored[2].params, "the killed trial is asked again with its own parameters"

    sweep(tmp_path, storage, 3, FakeLauncher())  # nothing left to do: no new trial
    assert len(trials(storage)) == 4


def test_a_running_trial_of_a_live_sweep_is_left_alone(tmp_path):
    from clipft.pipeline.optuna_resume import OWNER, ended_trials, requeue_dead_trials

    storage = f"sqlite:///{tmp_path / 'live.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    live, dead = study.ask(), study.ask()
    live.suggest_float("x", 0, 1)
    dead.suggest_float("x", 0, 1)
    import os
    import socket

    live.set_system_attr(OWNER, f"{socket.gethostname()}:{os.getppid()}")  # another live process
    dead.set_system_attr(OWNER, "elsewhere:1")
    assert requeue_dead_trials(study) == [dead.number]
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states == ["RUNNING", "FAIL", "WAITING"]
    assert ended_trials("s", storage) == 1, "the live trial counts; the requeued one counts when it is re-run"
