"""NaN loss, out of GPU memory, and a multirun with a failing job: clear messages, nothing lost."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, compose, run_script

from clipft.callbacks.nan_guard import NonFiniteLossError
from clipft.pipeline.failures import report_failure

FAULT = "+callbacks.fault._target_=reliability_faults.FaultAt"


def run_cfg(overrides, root):
    """A composed config as run_train gets it from @hydra.main (no hydra node)."""
    from omegaconf import open_dict

    cfg = compose(overrides, root=root)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = run_cfg([*FAST, "trainer.deterministic=true", FAULT, "+callbacks.fault.action=poison", "+callbacks.fault.epoch=1"], root=tmp_path)
    from clipft.pipeline.train import run_train

    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 1, step \d+.*last good checkpoint is .*last\.ckpt.*optimizer\.lr") as info:
        run_train(cfg)
    assert "\n" not in str(info.value)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0  # written after epoch 0; nothing written after the NaN
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_out_of_memory_names_batch_size_and_knobs(tmp_path, capsys):
    cfg = run_cfg([*FAST, FAULT, "+callbacks.fault.action=oom", "trainer.max_epochs=1"], root=tmp_path)
    from clipft.pipeline.train import run_train

    with pytest.raises(torch.OutOfMemoryError) as info:
        run_train(cfg)
    with pytest.raises(SystemExit) as exit_info:
        report_failure(info.value, cfg)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipft error: out of GPU memory with data.batch_size=32")
    assert "data.batch_size=16" in err and "trainer.accumulate_grad_batches" in err and "of 32" in err


def test_bugs_keep_their_traceback(tmp_path):
    cfg = compose([], root=tmp_path)
    assert report_failure(RuntimeError("some bug"), cfg) is None  # the caller re-raises it


@pytest.mark.slow
def test_multirun_job_failure_is_recorded_and_other_jobs_finish(tmp_path, monkeypatch):
    args = ["-m", *FAST, "trainer.max_epochs=1", "test=false", "model.optimizer.lr=-1,0.001"]
    result = run_script("train.py", args, cwd=tmp_path, timeout=300)
    assert result.returncode != 0  # the sweep reports that a job failed ...
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1, result.stderr[-3000:]
    sweep = sweeps[0]
    failures = [json.loads(line) for line in (sweep / "failures.jsonl").read_text().splitlines()]
    assert [f["job"] for f in failures] == [0]
    assert "model.optimizer.lr=-1" in failures[0]["overrides"] and "positive number" in failures[0]["error"]
    # ... after running the next one to the end
    done = json.loads((sweep / "1" / "job_status.json").read_text())
    assert done["status"] == "COMPLETED", result.stderr[-3000:]
    assert (sweep / "1" / "checkpoints" / "last.ckpt").is_file()
