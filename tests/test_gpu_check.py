"""benchmarks/gpu_check.sh --dry-run: the device script runs end to end on CPU, every section reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_reports_every_section(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert "FAILED" not in result.stdout, result.stdout[-3000:]
    for name in ("versions", "train_throughput", "compile", "precision_agreement", "e2e_epoch", "prompt_memory", "methods"):
        assert any(line.startswith(f"RESULT | {name} |") for line in lines), (name, lines)
    for run in ("flyp", "coop", "coop_feature_bank", "grid_linear_probe", "grid_clap", "grid_tip_adapter_f", "grid_lora"):
        assert any(line.startswith(f"RESULT | methods | {run} |") for line in lines), (run, lines)  # img/s or SKIPPED
    figures = tmp_path / "gpu_check"
    step = json.loads((figures / "step.json").read_text())["variants"]
    assert step["user"]["framework_img_s"] > 0 and step["lean"]["ratio"] > 0
    precision = json.loads((figures / "precision.json").read_text())
    assert len(precision["fp32"]) == len(precision["bf16"]) == 20 and precision["relative_gap_last"] < 0.05
    epoch = json.loads((figures / "epoch.json").read_text())
    assert epoch["epoch_img_s"] > 0 and epoch["share"] > 0
    memory = json.loads((figures / "prompt_memory.json").read_text())["rows"]
    assert len(memory) == 4 and all(row["peak_mib"] > 0 for row in memory)
    assert json.loads((figures / "method_coop.json").read_text())["img_s"] > 0
