"""A built wheel trains: configs and class descriptions ship in it, clipft-train runs in an empty folder.

The wheel goes into a fresh venv whose only link to this environment is a ``.pth`` line naming its
site-packages (torch, lightning, hydra are reused, nothing is downloaded). That line does not
process the ``.pth`` files found there, so the editable install of the checkout stays invisible:
the test asserts clipft is imported from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_trains_in_an_empty_folder(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("clipft-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("clipft/conf/train.yaml", "clipft/conf/experiment/sign_clip58.yaml", "clipft/conf/__init__.py",
                    "clipft/class_descriptions/gtsrb.yaml"):
        assert shipped in names, shipped
    assert not any(n.startswith(("tests/", "benchmarks/")) or n in ("train.py", "eval.py") for n in names)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "reuse_outer_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                                "-q", str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]

    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPFT_ROOT", "PYTHONPATH", "CLIPFT_CACHE_DIR")}
    where = subprocess.check_output([str(python), "-c", "import clipft; print(clipft.__file__)"], cwd=work, env=env, text=True)
    assert str(site) in where, f"clipft must come from the wheel, not the checkout: {where}"
    run = subprocess.run([str(env_dir / "bin" / "clipft-train"), "trainer.max_epochs=1", "~callbacks.rich_progress_bar",
                          "data.train_per_class=6", "data.test_per_class=2", "hydra.run.dir=outputs/wheel_run"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((work / "outputs" / "wheel_run" / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] > 0
    assert (work / "data").is_dir(), "the embedded demo data is generated under the current folder"
