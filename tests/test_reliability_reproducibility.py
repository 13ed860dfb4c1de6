"""Same seed + trainer.deterministic=true on CPU -> identical metrics.json numbers; the run
directory records where it came from."""

from __future__ import annotations

import json

import yaml
from conftest import FAST, compose
from omegaconf import open_dict

from clipft.pipeline.train import run_train


def run_once(root):
    cfg = compose([*FAST, "trainer.max_epochs=1", "trainer.deterministic=true", "seed=3", "logger=none"], root=root)
    with open_dict(cfg):
        del cfg.hydra
    run_train(cfg)
    return root / "run"


def test_same_seed_gives_identical_metrics(tmp_path):
    a, b = run_once(tmp_path / "a"), run_once(tmp_path / "b")
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    # timing (duration_s) and the run directory differ by nature; every number about the model must not
    for key in ("summary", "test", "epochs_trained", "data"):
        assert ma[key] == mb[key], key
    assert ma["duration_s"] > 0 and ma["run"]["output_dir"] != mb["run"]["output_dir"]
    assert ma["run"]["versions"]["torch"] and ma["run"]["versions"]["lightning"]
    assert "git_commit" in ma["run"]
    config = yaml.safe_load((a / "config.yaml").read_text())
    assert config["seed"] == 3 and "${" not in (a / "config.yaml").read_text()  # fully resolved
