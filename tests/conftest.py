"""Shared fixtures: tiny models and tiny datasets built on the fly (no downloads, no shared/ data)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "clipft" / "conf"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo test: no telemetry calls


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP saved with save_pretrained: loads through the hub-id code path."""
    from clipft.models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic-signs dataset (10 classes, 24 train + 6 test images each)."""
    from clipft.data import generate_synthetic_signs

    return generate_synthetic_signs(tmp_path_factory.mktemp("data") / "synthetic_signs", train_per_class=24, test_per_class=6)


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory) -> dict:
    """A tiny CLIP trained by run_train to tell red/green/blue squares apart (evaluation/CLI tests)."""
    import json

    from eval_helpers import colour_run_overrides, make_colour_dataset

    root = tmp_path_factory.mktemp("colour-run")
    data = make_colour_dataset(root / "colours")
    result = run_script("train.py", [*colour_run_overrides(data), f"hydra.run.dir={root / 'run'}"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"root": root, "data": data, "run_dir": run_dir, "metrics": metrics,
            "ckpt": run_dir / "checkpoints" / "best.ckpt"}


def compose(overrides: list[str] | None = None, config_name: str = "train", root: Path | None = None):
    """Compose a config exactly as the entry point would (hydra runtime values included)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if root is not None:
        with open_dict(cfg):
            cfg.paths.root_dir = str(root)
            cfg.paths.output_dir = str(root / "run")
    return cfg


# small, fast settings for any end-to-end run in tests
FAST = [
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "~callbacks.rich_progress_bar",
    "data.train_per_class=12",
    "data.test_per_class=4",
    "data.batch_size=32",
]


def run_script(script: str, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run train.py / eval.py in a fresh interpreter, as a user would."""
    env = dict(os.environ, CLIPFT_ROOT=str(cwd), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
