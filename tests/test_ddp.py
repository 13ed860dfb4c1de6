"""2-process DDP on CPU (gloo) through ``python train.py trainer=ddp``, as a user launches it.

Lightning re-launches train.py for rank 1; the run must still produce exactly one run
directory, a metrics.json shaped like a single-process run's (every test image counted once,
DistributedSampler padding dropped) and a best.ckpt that loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose, run_script

# 5 classes x 5 test images = 25: odd, so the 2-rank DistributedSampler pads one sample
DDP_DATA = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_model_summary=false",
    "~callbacks.rich_progress_bar",
    "data.num_classes=5",
    "data.train_per_class=12",
    "data.test_per_class=5",
    "data.batch_size=16",
]


def _shape(obj):
    """The structure of a metrics dict: keys and list lengths, not values."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [len(obj), _shape(obj[0]) if obj else None]
    return "value"  # numbers may be None (undefined precision), so only the structure is compared


def test_two_process_ddp_run_writes_one_run_dir_full_test_report_and_loadable_checkpoint(tmp_path):
    result = run_script("train.py", ["trainer=ddp", "trainer.devices=2", *DDP_DATA], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr, "Lightning did not start 2 processes"

    run_dirs = [p.parent for p in (tmp_path / "outputs").rglob(".clipft-run.json")]
    assert len(run_dirs) == 1, f"the DDP child made its own run directory: {run_dirs}"
    run_dir = run_dirs[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())

    n_test = metrics["data"]["test"]
    assert n_test == 25
    assert metrics["test"]["num_samples"] == n_test, "test outputs must cover every test image exactly once"
    assert sum(row for r in metrics["test"]["confusion_matrix"] for row in r) == n_test
    assert sum(c["support"] for c in metrics["test"]["per_class"].values()) == n_test
    assert [c["support"] for c in metrics["test"]["per_class"].values()] == [5] * 5

    # same structure as a single-process run's metrics (test / summary sections)
    from clipft.evaluation.metrics import classification_report

    single = classification_report(torch.full((n_test, 5), 0.2), torch.arange(n_test) % 5, list(metrics["test"]["per_class"]))
    ddp_shape, single_shape = _shape(metrics["test"]), _shape(single)
    assert {k: ddp_shape.get(k) for k in single_shape} == single_shape  # the pipeline may add keys
    assert {"test_accuracy", "test_macro_f1", "test_ece"} <= set(metrics["summary"])

    from clipft.methods.loading import load_module

    model = load_module(run_dir / "checkpoints" / "best.ckpt")
    with torch.no_grad():
        probs = model(torch.randn(2, 3, 32, 32)).softmax(-1)
    assert probs.shape == (2, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


@pytest.mark.parametrize("env, zero", [({}, True), ({"LOCAL_RANK": "1"}, False), ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False), ({"SLURM_PROCID": "0", "LOCAL_RANK": "0"}, True)])
def test_global_zero_process_from_launcher_environment(monkeypatch, env, zero):
    from clipft.pipeline.launch import RANK_VARIABLES, is_global_zero_process

    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_global_zero_process() is zero


def _trainer_for(overrides: list[str], tmp_path: Path):
    from clipft.pipeline.building import build_trainer

    cfg = compose(overrides, root=tmp_path)
    return build_trainer(cfg, callbacks=[], loggers=[])


def test_multirun_with_script_relaunching_ddp_is_refused_with_the_fix(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from clipft.errors import ConfigError

    ddp = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    trainer = _trainer_for(ddp, tmp_path)  # a single run is fine
    assert trainer.num_devices == 2

    cfg = compose(ddp, root=tmp_path)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    from clipft.pipeline.building import build_trainer

    with pytest.raises(ConfigError, match="ddp_spawn"):
        build_trainer(cfg, callbacks=[], loggers=[])
    spawn = compose(["trainer=ddp_spawn", "trainer.devices=2", "trainer.accelerator=cpu"], root=tmp_path)
    with read_write(spawn.hydra), open_dict(spawn.hydra):
        spawn.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(spawn)
    assert build_trainer(spawn, callbacks=[], loggers=[]).num_devices == 2  # the documented way out
