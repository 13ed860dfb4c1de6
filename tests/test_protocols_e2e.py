"""Each benchmark protocol end to end on the synthetic demo set, in-process: one cell of its grid trains a tiny
CLIP, the pipeline writes what the protocol reports (base/novel/HM, eval_targets' transfer scores), and
``clipft.results --protocol`` builds its table from the run folder. (The few-shot grid's subprocess sweep and its
resume: tests/test_protocols.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose
from omegaconf import open_dict

from clipft.results import collect
from clipft.results.protocol_render import to_markdown
from clipft.results.protocols import protocol_table

SMALL = ["data=synthetic_signs", "data.train_per_class=8", "data.test_per_class=3", "data.num_classes=6",
         "trainer.max_epochs=1", "trainer.max_steps=-1", "trainer.accelerator=cpu", "trainer.enable_model_summary=false",
         "~callbacks.rich_progress_bar", "logger=none", "plots=false", "data.batch_size=8", "data.num_workers=0",
         "data.persistent_workers=false"]
TINY = [*SMALL, "data.shots=4", "protocol/method=coop", "model.n_ctx=2"]


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    """A private synthetic set (written on first use): these runs ask for 6 and 10 classes, which would rewrite the
    session-wide ``synthetic_root`` other tests count on."""
    return tmp_path / "signs6"


def run_cell(protocol: str, tmp_path: Path, tiny_clip_dir: Path, synthetic_root: Path, extra: list[str],
             base: list[str] = TINY, seed: int = 1) -> Path:
    from clipft.pipeline.train import run_train

    cfg = compose([f"protocol={protocol}", *base, f"data.root={synthetic_root}", f"model.clip.name_or_path={tiny_clip_dir}",
                   f"seed={seed}", *extra], root=tmp_path)
    with open_dict(cfg):
        del cfg["hydra"]
    metrics = run_train(cfg)
    return Path(metrics["run"]["output_dir"])


def table_of(protocol: str, run_dir: Path | list[Path]):
    table = protocol_table(collect(run_dir if isinstance(run_dir, list) else [run_dir]), protocol)
    return table, to_markdown(table)


def test_base2novel_cell_reports_base_novel_and_hm_and_its_table(tmp_path, tiny_clip_dir, synthetic_root):
    run = run_cell("base2novel", tmp_path, tiny_clip_dir, synthetic_root, [])
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    base, novel = summary["test_accuracy_base"], summary["test_accuracy_novel"]
    assert summary["test_hm"] == pytest.approx(2 * base * novel / (base + novel) if base + novel else 0.0)
    table, markdown = table_of("base2novel", run)
    assert "HM" in markdown and f"{100 * summary['test_hm']:.2f}" in markdown


@pytest.mark.parametrize("protocol", ["cross_dataset", "domain_generalization"])
def test_a_transfer_cell_scores_its_eval_targets_after_training(protocol, tmp_path, tiny_clip_dir, synthetic_root):
    """The source trains on 6 classes; the target is the other classes of a 10-class copy (another label
    space): the unchanged model, retargeted, is scored there as eval.py would, in the same command."""
    target = (f"eval_targets=[{{data: synthetic_signs, overrides: ['data.root={synthetic_root.parent / 'signs10'}', 'data.num_classes=10', "
              "'data.classes=novel', 'data.test_per_class=3', 'data.train_per_class=8', 'plots=false', 'logger=none']}]")
    run = run_cell(protocol, tmp_path, tiny_clip_dir, synthetic_root, [target])
    metrics = json.loads((run / "metrics.json").read_text())
    transfer = metrics["summary"]["transfer"]["synthetic_signs/novel"]
    assert transfer["classes"] == 5 and 0.0 <= transfer["accuracy"] <= 1.0
    scored = json.loads((run / "transfer" / "synthetic_signs" / "metrics.json").read_text())
    assert scored["summary"]["test_accuracy"] == pytest.approx(transfer["accuracy"])
    assert scored["checkpoint"] == metrics["best_checkpoint"]  # the trained run's best weights, not a new model
    table, markdown = table_of(protocol, run)
    assert "synthetic_signs/novel" in markdown and f"{100 * transfer['accuracy']:.2f}" in markdown


def test_realistic_cell_tests_the_final_weights_and_its_table(tmp_path, tiny_clip_dir, synthetic_root):
    run = run_cell("realistic", tmp_path, tiny_clip_dir, synthetic_root, [])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["callbacks"]["early_stopping"] is None  # no val-driven choice: the fixed recipe's last weights
    table, markdown = table_of("realistic", run)
    assert f"{100 * metrics['summary']['test_accuracy']:.2f}" in markdown


def test_a_malformed_eval_target_is_one_line_naming_its_index():
    from clipft.errors import ConfigError
    from clipft.pipeline.eval_targets import parse_target

    assert parse_target("dtd", 0) == ("dtd", [])
    assert parse_target({"data": "dtd", "overrides": ["data.root=/x"]}, 1) == ("dtd", ["data.root=/x"])
    with pytest.raises(ConfigError, match=r"eval_targets\[2\] must be a data config name") as info:
        parse_target({"dataset": "dtd"}, 2)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"eval_targets\[0\]\.overrides must be a list of strings"):
        parse_target({"data": "dtd", "overrides": "data.root=/x"}, 0)


def test_a_zero_shot_cell_without_a_checkpoint_skips_its_targets(tmp_path, caplog):
    from omegaconf import OmegaConf

    from clipft.pipeline.eval_targets import score_eval_targets

    cfg = OmegaConf.create({"eval_targets": ["dtd"]})
    assert score_eval_targets(cfg, None, tmp_path) == {}
    assert "eval_targets skipped" in caplog.text


def test_merging8_cells_merge_into_a_row_of_their_own(tmp_path, tiny_clip_dir, synthetic_root):
    """Two fine-tuning cells (frozen zero-shot head, as Task Arithmetic), merged with task arithmetic (lambda chosen
    on val), the merged model scored as eval.py would: the table has the fine-tuned row and the merge's row."""
    from clipft.merging.cli import main as merge_main
    from clipft.pipeline.evaluate import run_eval

    cells = [run_cell("merging8", tmp_path / f"cell{seed}", tiny_clip_dir, synthetic_root,
                      ["model.optimizer.lr=1e-3"], base=SMALL, seed=seed) for seed in (1, 2)]
    out = tmp_path / "merged" / "task_arithmetic"
    assert merge_main(["--method", "task_arithmetic", "--runs", *map(str, cells), "--out", str(out), "--lambdas", "0.5", "1"]) == 0
    checkpoint = json.loads((out / "merge.json").read_text())["checkpoints"]
    name, ckpt = sorted(checkpoint.items())[0]
    cfg = compose([f"ckpt_path={ckpt}", "data=synthetic_signs", f"data.root={synthetic_root}", "data.num_classes=6",
                   "data.train_per_class=8", "data.test_per_class=3", "logger=none", "plots=false", "trainer.accelerator=cpu"],
                  config_name="eval", root=out / name / "eval")
    with open_dict(cfg):
        del cfg["hydra"]
    scored = run_eval(cfg, overrides=["data=synthetic_signs"])
    table, markdown = table_of("merging8", [*cells, Path(scored["run"]["output_dir"])])
    assert "task_arithmetic" in markdown and f"{100 * scored['summary']['test_accuracy']:.2f}" in markdown
