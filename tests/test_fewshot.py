"""experiment=fewshot: a k-shot sweep (shots x draws x methods) -> the mean ± std table and the shots figure."""

from __future__ import annotations

import pytest
from conftest import FAST, run_script
from PIL import Image


@pytest.mark.slow  # a fresh interpreter per sweep (4 tiny jobs, ~1 min on 2 cores)
def test_fewshot_sweep_writes_the_seed_table_and_the_shots_figure(tmp_path, tiny_clip_dir, capsys):
    from clipft.results import main

    sweep = tmp_path / "sweep"
    overrides = [
        "experiment=fewshot", f"model.clip.name_or_path={tiny_clip_dir}", f"hydra.sweep.dir={sweep}",
        "model=clip_zeroshot,clip_linear_probe", "data.shots=1,2",
        "data.shot_seed=0", *[o for o in FAST if "max_epochs" not in o], "trainer.max_epochs=1",
        "logger=none", "plots=false",
    ]
    result = run_script("train.py", ["-m", *overrides], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    capsys.readouterr()
    assert main([str(sweep), "--seeds", "--shots-plot", str(tmp_path / "shots.png"), "--columns", "model,split,test_acc"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if "-shot" in line]
    assert len(rows) == 4 and sum("clip_linear_probe" in r for r in rows) == 2  # one row per (method, K)
    assert any("1-shot" in r for r in rows) and any("2-shot" in r for r in rows)
    with Image.open(tmp_path / "shots.png") as im:
        im.verify()
