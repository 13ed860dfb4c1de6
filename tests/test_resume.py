"""Interrupted runs resume exactly: SIGKILL between checkpoints, SIGTERM mid-epoch, ckpt_path=last."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, run_script

from clipft.errors import CheckpointError, ConfigError
from clipft.pipeline.run_dir import claim_run_dir, find_last_checkpoint

EXACT = [*FAST, "trainer.max_epochs=3", "trainer.deterministic=true", "seed=7"]
FAULT = "+callbacks.fault._target_=reliability_faults.FaultAt"


@pytest.fixture
def fault_path(monkeypatch):
    """train.py subprocesses can import tests/reliability_faults.py."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")])))


def only_run(root: Path, name: str) -> Path:
    runs = [p for p in (root / "outputs" / name).iterdir() if (p / "checkpoints").is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def numbers(run: Path) -> dict:
    """What must match exactly: the summary and test sections (timing and run directory differ by nature)."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {"summary": metrics["summary"], "test": metrics["test"], "epochs": metrics["epochs_trained"]}


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, fault_path):
    ref = run_script("train.py", [*EXACT, "run_name=ref"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    # killed hard in the middle of epoch 2, after epoch 1's last.ckpt
    killed = run_script("train.py", [*EXACT, "run_name=job", FAULT, "+callbacks.fault.action=sigkill", "+callbacks.fault.epoch=2", "+callbacks.fault.batch=1"], cwd=tmp_path)
    assert killed.returncode == -9
    run = only_run(tmp_path, "job")
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # complete and safe to load
    assert last["epoch"] == 1
    resumed = run_script("train.py", [*EXACT, "run_name=job", "ckpt_path=last"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert only_run(tmp_path, "job") == run  # continued in the original run directory
    assert numbers(run) == numbers(only_run(tmp_path, "ref"))
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(only_run(tmp_path, "ref") / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)  # bit-identical final weights
    def epochs(name):
        return {row.split(",")[0] for row in (run / "csv" / name).read_text().splitlines()[1:]} - {""}

    assert epochs("metrics.part1.csv") == {"0", "1"}  # the killed run's history, flushed each epoch
    assert "2" in epochs("metrics.csv")  # the resumed run's


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, fault_path):
    term = run_script("train.py", [*EXACT, "run_name=term", FAULT, "+callbacks.fault.action=sigterm", "+callbacks.fault.epoch=1", "+callbacks.fault.batch=1"], cwd=tmp_path)
    assert term.returncode == 143, term.stderr[-3000:]
    assert "clipft error: interrupted by SIGTERM: saved" in term.stderr and "ckpt_path=last" in term.stderr
    run = only_run(tmp_path, "term")
    interrupted = torch.load(run / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert interrupted["global_step"] == 6  # mid-epoch 1: 4 batches in epoch 0 + 2
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 4  # the last completed epoch, untouched
    resumed = run_script("train.py", [*EXACT, "run_name=term", "ckpt_path=last"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref = run_script("train.py", [*EXACT, "run_name=ref"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert numbers(run) == numbers(only_run(tmp_path, "ref"))


def touch_ckpt(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_find_last_checkpoint_takes_the_newest_run(tmp_path):
    old = touch_ckpt(tmp_path / "2026-01-01_00-00-00-000001" / "checkpoints" / "last.ckpt", time.time() - 100)
    new = touch_ckpt(tmp_path / "2026-01-01_00-00-00-000002" / "checkpoints" / "last.ckpt", time.time())
    assert find_last_checkpoint(tmp_path) == new != old
    assert find_last_checkpoint(tmp_path / "nothing") is None


def test_resume_errors_are_clear(tmp_path):
    from conftest import compose

    from clipft.pipeline.run_dir import resolve_resume

    with pytest.raises(ConfigError, match=r"ckpt_path=last: no last\.ckpt under .*run_name='nobody'"):
        resolve_resume(compose(["ckpt_path=last", "run_name=nobody"], root=tmp_path))
    weights = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}, "clipft": {"module": "clipft.methods.ContrastiveFineTune"}}, weights)
    with pytest.raises(CheckpointError, match=r"weights only, no training state.*init_from="):
        resolve_resume(compose([f"ckpt_path={weights}"], root=tmp_path))
    other = tmp_path / "other.ckpt"
    torch.save({"loops": {}, "optimizer_states": [], "clipft": {"module": "clipft.methods.cnn.CNNClassifier"}}, other)
    with pytest.raises(CheckpointError, match=r"trained by clipft\.methods\.cnn\.CNNClassifier, but model\._target_"):
        resolve_resume(compose([f"ckpt_path={other}"], root=tmp_path))


def test_a_live_run_directory_is_never_shared(tmp_path):
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        marker = tmp_path / ".clipft-run.json"
        marker.write_text(json.dumps({"pid": other.pid, "host": os.uname().nodename, "task": "train"}))
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {other.pid}"):
            claim_run_dir(tmp_path)
    finally:
        other.kill()
        other.wait()
    claim_run_dir(tmp_path)  # its owner is gone: taken over
    assert json.loads(marker.read_text())["pid"] == os.getpid()
