"""Weight-space merging of runs: the rules on hand-made tensors, and two tiny fine-tuning runs merged by the
CLI into checkpoints that keep each run's head, load in eval.py and export."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_clip_pipeline import evaluate, train

from clipft.errors import CheckpointError, ConfigError
from clipft.exporting import export_checkpoint, load_safetensors_export
from clipft.merging.cli import main
from clipft.merging.runs import merge_runs
from clipft.merging.weights import apply_task_vector, model_stock, sum_task_vectors, task_vectors, ties_task_vector
from clipft.methods.loading import load_module


def test_ties_trims_elects_the_sign_by_mass_and_averages_the_agreeing_entries():
    pre = {"w": torch.zeros(6), "n": torch.tensor(3)}
    a = {"w": torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, -4.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([1.0, 2.0, -0.2, -2.0, 0.0, -1.0]), "n": torch.tensor(3)}
    # top 50 %: a keeps 3, -4, 2; b keeps 1, 2, -2, -1 (1 ties its threshold). Entry 3 sums to 0: the
    # majority of the elected signs (+, +, -) is +, so only a's 2 is averaged there.
    tau = ties_task_vector(task_vectors(pre, [a, b]), top_k=50)
    assert torch.equal(tau["w"], torch.tensor([2.0, 2.0, 0.0, 2.0, 0.0, -2.5])) and set(tau) == {"w"}
    merged = apply_task_vector(pre, tau, 0.5)
    assert torch.equal(merged["w"], 0.5 * tau["w"]) and int(merged["n"]) == 3


def test_task_arithmetic_end_points_are_the_pretrained_and_the_finetuned_model():
    pre, ft = {"w": torch.randn(4, 3)}, {"w": torch.randn(4, 3)}
    tau = sum_task_vectors(task_vectors(pre, [ft]))
    assert torch.equal(apply_task_vector(pre, tau, 0.0)["w"], pre["w"])
    torch.testing.assert_close(apply_task_vector(pre, tau, 1.0)["w"], ft["w"], atol=1e-6, rtol=0)


def test_model_stock_goes_to_the_pretrained_model_for_orthogonal_updates_and_to_the_average_for_equal_ones():
    pre = {"w": torch.ones(2, 2), "u": torch.zeros(3)}
    a = {"w": pre["w"] + torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "u": torch.tensor([1.0, 2.0, 3.0])}
    b = {"w": pre["w"] + torch.tensor([[0.0, 1.0], [0.0, 0.0]]), "u": torch.tensor([1.0, 2.0, 3.0])}
    merged, ratios = model_stock(pre, [a, b])
    assert abs(ratios["w"]) < 1e-6 and torch.allclose(merged["w"], pre["w"])  # cos 0: t = 0
    assert abs(ratios["u"] - 1.0) < 1e-6 and torch.allclose(merged["u"], a["u"])  # cos 1: t = 2 / 2
    with pytest.raises(ConfigError, match="at least two"):
        model_stock(pre, [a])


def test_options_that_do_not_apply_to_a_method_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--lambdas"):
        merge_runs("model_stock", [tmp_path], tmp_path / "o", lambdas=[0.5])
    with pytest.raises(ConfigError, match="--top-k"):
        merge_runs("task_arithmetic", [tmp_path], tmp_path / "o", top_k=10)
    with pytest.raises(ConfigError, match="percentage"):
        ties_task_vector([{"w": torch.ones(2)}], top_k=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_clip_dir):
    """Two linear-head fine-tunes of one tiny pretrained CLIP (their own heads, different learning rates)."""
    root = tmp_path_factory.mktemp("runs")
    for name, lr in (("a", "1e-3"), ("b", "3e-3")):
        train(["model=clip_linear_head", f"model.clip.name_or_path={tiny_clip_dir}", f"model.optimizer.lr={lr}",
               "model.scheduler.warmup_steps=1"], root / name)
    return [root / "a" / "run", root / "b" / "run"]


def test_ties_cli_picks_lambda_on_val_and_writes_checkpoints_that_keep_each_head(runs, tmp_path):
    out = tmp_path / "merged"
    assert main(["--method", "ties", "--runs", *map(str, runs), "--out", str(out), "--lambdas", "0", "0.5", "1"]) == 0
    report = json.loads((out / "merge.json").read_text())
    means = {row["lambda"]: row["mean"] for row in report["grid"]}
    assert report["lambda"] == max(means, key=means.get) and report["top_k"] == 20.0 and set(means) == {0.0, 0.5, 1.0}
    assert "(chosen)" in (out / "merge.md").read_text()

    originals = [load_module(r / "checkpoints" / "best.ckpt") for r in runs]
    pre = {k: v for k, v in originals[0].zeroshot_reference().state_dict().items() if k.startswith("backbone.")}
    tuned = [{k: v for k, v in m.state_dict().items() if k.startswith("backbone.")} for m in originals]
    expected = apply_task_vector(pre, ties_task_vector(task_vectors(pre, tuned), 20), report["lambda"])
    for name, original in zip(("0_run", "1_run"), originals):
        merged = load_module(report["checkpoints"][name])  # through the file gate, like eval.py and the CLIs
        state = merged.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items())
        assert torch.equal(state["head.weight"], original.state_dict()["head.weight"])  # its own head
        assert merged.checkpoint_meta["merge"]["method"] == "ties"
    assert not torch.equal(*(load_module(c).state_dict()["head.weight"] for c in report["checkpoints"].values()))
    assert (out / "0_run" / "config.yaml").read_text() == (runs[0] / "config.yaml").read_text()  # eval: the task's own data
    scored = evaluate([f"ckpt_path={report['checkpoints']['0_run']}"], tmp_path / "eval")
    assert scored["summary"]["test_accuracy"] is not None
    export_checkpoint(report["checkpoints"]["1_run"], "safetensors", str(tmp_path / "export"))  # clipft-export
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_safetensors_export(tmp_path / "export")(x), load_module(report["checkpoints"]["1_run"])(x))


def test_model_stock_merges_two_runs_and_runs_from_another_backbone_are_refused(runs, tmp_path, tiny_clip_dir):
    report = merge_runs("model_stock", [runs[0].parent.parent], tmp_path / "stock")  # a folder of runs: every run below
    assert report["lambda"] is None and len(report["grid"]) == 1 and -1.0 <= report["ratio"]["mean"] <= 1.0
    assert set(report["checkpoints"]) == {"0_run", "1_run"}
    other = tmp_path / "other"
    shutil.copytree(runs[1].parent, other)
    shutil.copytree(tiny_clip_dir, tmp_path / "another-clip")
    ckpt_path = other / "run" / "checkpoints" / "best.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["hyper_parameters"]["clip"]["name_or_path"] = str(tmp_path / "another-clip")
    torch.save(ckpt, ckpt_path)
    with pytest.raises(CheckpointError, match="another backbone"):
        merge_runs("task_arithmetic", [runs[0], other], tmp_path / "refused")
    linked = tmp_path / "linked"  # the same pretrained folder through a symlink (a worktree, a moved checkout)
    shutil.copytree(runs[1].parent, linked)
    (tmp_path / "clip-link").symlink_to(tiny_clip_dir, target_is_directory=True)
    ckpt_path = linked / "run" / "checkpoints" / "best.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["hyper_parameters"]["clip"]["name_or_path"] = str(tmp_path / "clip-link")
    torch.save(ckpt, ckpt_path)
    assert merge_runs("model_stock", [runs[0], linked / "run"], tmp_path / "through-a-link")["lambda"] is None
