"""The results collector: run folders -> one ranked markdown/CSV table (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clipft.errors import ConfigError, DataError
from clipft.results import collect, describe_split, main, rank, run_row, to_markdown, varying_overrides


def make_run(
    path: Path,
    *,
    val: float | None = 0.9,
    test: float | None = 0.8,
    experiment: str | None = "exp1",
    data: str = "traffic_signs",
    dedupe: str | None = "group",
    overrides: list[str] | None = None,
    finished: bool = True,
    failure: dict | None = None,
) -> Path:
    """A run folder as train.py leaves it: .hydra record, config.yaml, metrics.json."""
    (path / ".hydra").mkdir(parents=True)
    choices = {"experiment": experiment, "model": "clip_flyp", "data": data}
    (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    config = {"run_name": "r", "data": {"val_fraction": 0.1, "dedupe": dedupe, "test_view": "clean"}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if finished:
        metrics = {
            "summary": {"best_val_acc": val, "test_accuracy": test, "test_macro_f1": 0.5, "test_ece": 0.0123},
            "data": {"train": 90, "val": 10, "test": 20},
            "epochs_trained": 7,
            "duration_s": 125.4,
            "config": config,
        }
        (path / "metrics.json").write_text(json.dumps(metrics))
    if failure is not None:
        (path / "job_status.json").write_text(json.dumps({"status": "FAILED", **failure}))
    return path


def test_run_row_reads_metrics_and_hydra_choices(tmp_path):
    row = run_row(make_run(tmp_path / "run", dedupe="none"))
    assert row["method"] == "exp1" and row["data"] == "traffic_signs" and row["model"] == "clip_flyp"
    assert row["split"] == "random 90/10, test clean"
    assert (row["n_train"], row["n_val"], row["n_test"], row["epochs"]) == (90, 10, 20, 7)
    assert row["val_acc"] == 0.9 and row["test_acc"] == 0.8 and row["status"] == "ok"


def test_grouped_split_is_named_differently_from_random(tmp_path):
    grouped = run_row(make_run(tmp_path / "a", dedupe="group"))
    random_ = run_row(make_run(tmp_path / "b", dedupe="none"))
    assert grouped["split"].startswith("dup-grouped 90/10")
    assert random_["split"].startswith("random 90/10")


@pytest.mark.parametrize(
    ("dedupe", "expected"),
    [("group", "track+dup-grouped 90/10"), ("none", "track-grouped 90/10"), ("drop", "deduped, track-grouped 90/10")],
)
def test_track_grouped_split_is_named(dedupe, expected):
    assert describe_split({"dedupe": dedupe, "val_fraction": 0.1, "group_tracks": True}, {}) == expected


def test_split_reads_the_dedupe_mode_the_data_report_writes():
    """Without ``data.dedupe`` in the config, the data report's ``duplicates.mode`` names the split."""
    assert describe_split({"val_fraction": 0.1}, {"duplicates": {"mode": "drop", "checked": True}}) == "deduped 90/10"
    assert describe_split({"val_fraction": 0.1}, {"dedupe": {"mode": "drop"}}) == "random 90/10"  # no such key


def test_any_group_switch_of_a_data_config_names_the_split():
    """Nothing dataset-specific: a ``group_<units>: true`` switch is read as such."""
    assert describe_split({"dedupe": "none", "group_sequences": True}, {}) == "sequence-grouped"
    assert describe_split({"dedupe": "group", "group_tracks": False}, {}) == "dup-grouped"


def test_the_seed_table_is_a_function_of_rows_alone():
    from clipft.results import aggregate_seeds, rows_table

    rows = [{"method": "m", "status": "ok", "seed": s, "overrides": f"seed={s}", "test_acc": a} for s, a in ((0, 0.6), (1, 0.8))]
    row = aggregate_seeds(rows_table(rows)).iloc[0]
    assert row["test_acc"] == pytest.approx((0.7, 0.1414), abs=1e-4) and row["seeds"] == "0,1"


@pytest.mark.parametrize(
    ("config", "expected"),
    [({"model": {"image_size": 128}}, 128), ({"data": {"image_size": 96}, "model": {"image_size": 224}}, 96),
     ({"model": {"clip": {"name_or_path": "x"}}}, None), ({"model": {"clip": {"image_size": 128}}}, 128)],
)
def test_input_size_column_is_the_size_the_datamodule_resized_to(tmp_path, config, expected):
    from clipft.results import input_size

    assert input_size(config) == expected
    run = make_run(tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["config"] = {**metrics["config"], **config}
    (run / "metrics.json").write_text(json.dumps(metrics))
    md = to_markdown(collect([run]), ["method", "image_size", "test_acc"])
    assert md.strip().splitlines()[-1].split("|")[2].strip() == (str(expected) if expected else "-")


def test_collect_finds_nested_runs_and_keeps_unfinished_ones(tmp_path):
    make_run(tmp_path / "multirun" / "s" / "0", val=0.5)
    make_run(tmp_path / "multirun" / "s" / "1", finished=False)
    make_run(tmp_path / "multirun" / "s" / "2", finished=False, failure={"error": "CUDA OOM"})
    frame = collect([tmp_path / "multirun"])
    assert list(frame["status"]) == ["ok", "incomplete", "failed"]
    assert frame.loc[2, "error"] == "CUDA OOM"
    assert len(collect([tmp_path / "multirun"], complete_only=True)) == 1


def test_rank_orders_best_first_and_failed_last(tmp_path):
    for i, val in enumerate([0.7, None, 0.95, 0.8]):
        make_run(tmp_path / str(i), val=val, finished=val is not None)
    ranked = rank(collect([tmp_path]), "best_val_acc")
    assert list(ranked["best_val_acc"][:3]) == [0.95, 0.8, 0.7]
    assert list(ranked["rank"][:3]) == [1, 2, 3] and ranked["status"].iloc[-1] == "incomplete"
    assert list(rank(collect([tmp_path]), "best_val_acc", mode="min")["best_val_acc"][:3]) == [0.7, 0.8, 0.95]


def test_markdown_table_shows_percentages_and_time(tmp_path):
    make_run(tmp_path / "r", val=0.98346, test=0.8567)
    md = to_markdown(collect([tmp_path]), ["method", "split", "val_acc", "test_acc", "test_ece", "time_s"])
    header, rule, row = md.strip().splitlines()
    assert "val acc" in header and "test ECE" in header and set(rule) <= set("|:-")
    assert "98.35" in row and "85.67" in row and "0.012" in row and "2m05s" in row


def test_varying_overrides_keeps_only_swept_keys():
    lines = ["model.optimizer.lr=1e-5 trainer.max_epochs=3", "model.optimizer.lr=1e-6 trainer.max_epochs=3"]
    assert varying_overrides(lines) == ["model.optimizer.lr=1e-5", "model.optimizer.lr=1e-6"]
    assert varying_overrides(["a=1 b=2"]) == ["a=1 b=2"]


def test_cli_writes_markdown_and_csv(tmp_path, capsys):
    make_run(tmp_path / "runs" / "a", val=0.6, experiment="exp1")
    make_run(tmp_path / "runs" / "b", val=0.9, experiment="exp2")
    out, csv = tmp_path / "table.md", tmp_path / "table.csv"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--csv", str(csv), "--sort-by", "best_val_acc"]) == 0
    lines = out.read_text().splitlines()
    assert "exp2" in lines[2] and "exp1" in lines[3]  # ranked: best first
    assert "run_dir" in csv.read_text().splitlines()[0]


def test_cli_reports_missing_paths_and_unknown_columns(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    make_run(tmp_path / "r")
    assert main([str(tmp_path / "r"), "--columns", "method,bogus"]) == 1
    assert "bogus" in capsys.readouterr().err


def test_a_file_that_is_not_metrics_json_is_rejected(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="not a metrics.json"):
        collect([tmp_path / "x.txt"])


def test_eval_runs_are_named_after_the_trained_run_or_the_zero_shot_model(tmp_path):
    train = make_run(tmp_path / "train", experiment="exp2")
    for name, ckpt in (("eval", str(train / "checkpoints" / "best.ckpt")), ("zs", None)):
        run = make_run(tmp_path / name, experiment=None)
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, "checkpoint": ckpt}))
    assert run_row(tmp_path / "eval")["method"] == "eval: exp2"
    assert run_row(tmp_path / "zs")["method"] == "eval: r"  # no checkpoint: the run's own name


def test_an_eval_run_on_val_fills_the_val_column(tmp_path):
    run = make_run(tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["summary"] = {"val_accuracy": 0.4375, "val_macro_f1": 0.3, "val_ece": 0.1}  # eval.py split=val
    (run / "metrics.json").write_text(json.dumps(metrics))
    row = run_row(run)
    assert row["val_acc"] == 0.4375 and row["test_acc"] is None


def _fake_run(root, name, summary, seed, config_extra=None):
    import json as _json

    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "run_name": "m", "data": {"_target_": "clipft.data.FolderDataModule"}, **(config_extra or {})}
    (run / "metrics.json").write_text(_json.dumps({"summary": summary, "config": config, "data": {"train": 10}}))
    return run


def test_seed_table_reports_mean_and_sample_std_over_seeds(tmp_path):
    from clipft.results import aggregate_seeds, to_markdown

    for seed, acc in ((0, 0.80), (1, 0.90), (2, 0.85)):
        _fake_run(tmp_path, f"a{seed}", {"test_accuracy": acc, "best_val_acc": 0.9}, seed)
    _fake_run(tmp_path, "b0", {"test_accuracy": 0.5}, 0, {"run_name": "other"})
    table = aggregate_seeds(collect([tmp_path]))
    assert len(table) == 2
    row = table[table["method"] == "m"].iloc[0]
    mean, std = row["test_acc"]
    assert mean == pytest.approx(0.85) and std == pytest.approx(0.05)  # sample std of 0.80, 0.90, 0.85
    assert row["seeds"] == "0,1,2"
    assert "85.00 ± 5.00" in to_markdown(table, ["method", "test_acc", "seeds"])
    assert table[table["method"] == "other"].iloc[0]["test_acc"] == pytest.approx(0.5)  # one run: no spread
    ranked = rank(table, "test_accuracy", mode="min")  # --seeds --sort-by: by the mean, the (mean, std) kept
    assert list(ranked["method"]) == ["other", "m"] and ranked.loc[1, "test_acc"] == pytest.approx((0.85, 0.05))
    with pytest.raises(ConfigError, match="--sort-by nope"):
        rank(table, "nope")


def test_seed_table_keeps_runs_of_different_settings_apart(tmp_path):
    """Three lr-search runs are three rows, not one mean; draws and seeds of one setting are one row."""
    from clipft.results import aggregate_seeds

    for lr, test in (("0.002", 0.1), ("0.02", 0.3), ("0.2", 0.5)):
        make_run(tmp_path / f"lr{lr}", test=test, overrides=["model=clip_coop", f"model.optimizer.lr={lr}", "plots=false"])
    for draw, test in ((0, 0.6), (1, 0.8)):
        make_run(
            tmp_path / f"tip_d{draw}",
            experiment="fewshot",
            test=test,
            overrides=[f"data.shot_seed={draw}", f"seed={draw}", "hydra.run.dir=x", "run_name=y"],
        )
    table = aggregate_seeds(collect([tmp_path]))
    by_method = {row["method"]: row["test_acc"] for _, row in table.iterrows()}
    assert by_method["exp1 [model.optimizer.lr=0.002]"] == pytest.approx(0.1)
    assert by_method["exp1 [model.optimizer.lr=0.2]"] == pytest.approx(0.5)
    assert len(by_method) == 4
    mean, std = by_method["fewshot"]  # two draws, one setting: one row with a spread
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.1414, abs=1e-4)


def test_seed_table_names_the_few_shot_draws(tmp_path):
    from clipft.results import aggregate_seeds

    for draw in (0, 1, 2):
        _fake_run(tmp_path, f"d{draw}", {"test_accuracy": 0.5}, 42, {"data": {"shots": 4, "shot_seed": draw}})
    assert aggregate_seeds(collect([tmp_path])).iloc[0]["seeds"] == "seed 42, draws 0,1,2"


def test_wise_ft_plot_pairs_in_and_out_of_distribution_accuracy_per_alpha(tmp_path):
    import json as _json

    from PIL import Image

    from clipft.evaluation.wise_ft_plot import main

    for split, accs in (("val", (0.2, 0.7, 0.9)), ("test", (0.15, 0.6, 0.55))):
        rows = {a: {"accuracy": x, "macro_f1": x, "ece": 0.1} for a, x in zip(("0", "0.5", "1"), accs)}
        (tmp_path / split).mkdir()
        (tmp_path / split / "metrics.json").write_text(_json.dumps({"split": split, "checkpoint": "c.ckpt", "wise_ft": rows}))
    assert main([str(tmp_path / "val"), str(tmp_path / "test"), "--out", str(tmp_path / "w.png")]) == 0
    with Image.open(tmp_path / "w.png") as im:
        im.verify()
    assert (tmp_path / "w.csv").read_text().splitlines()[2] == "0.5,0.7000,0.6000"
    (tmp_path / "test" / "metrics.json").write_text(_json.dumps({"checkpoint": "other.ckpt", "wise_ft": {"0": {"accuracy": 1}}}))
    assert main([str(tmp_path / "val"), str(tmp_path / "test")]) == 1  # different checkpoints: refused


def test_the_table_shows_what_the_listed_runs_differ_in_by_default(tmp_path, capsys):
    """Two sweep jobs at two learning rates were two identical rows unless --columns ...,overrides was asked."""
    for job, lr in (("0", "1e-4"), ("1", "1e-5")):
        make_run(tmp_path / "sweep" / job, overrides=[f"model.optimizer.lr={lr}", "trainer.max_epochs=3", "paths.root_dir=/x"])
    assert main([str(tmp_path / "sweep")]) == 0
    header, _rule, *rows = capsys.readouterr().out.strip().splitlines()
    assert "swept" in header
    assert "model.optimizer.lr=1e-4" in rows[0] and "model.optimizer.lr=1e-5" in rows[1]
    assert "max_epochs" not in rows[0] + rows[1] and "root_dir" not in rows[0], "only what differs"
    assert main([str(tmp_path / "sweep" / "0")]) == 0 and "swept" not in capsys.readouterr().out, "one run: no column"


def test_a_debug_run_is_listed_as_debug_not_ok(tmp_path):
    fdr = make_run(tmp_path / "fdr", test=0.0)
    metrics = json.loads((fdr / "metrics.json").read_text())
    metrics["config"]["trainer"] = {"fast_dev_run": True}
    (fdr / "metrics.json").write_text(json.dumps(metrics))
    chosen = make_run(tmp_path / "limit")
    (chosen / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"experiment": "exp1", "model": "clip_flyp", "debug": "limit"}}}}))
    plain = make_run(tmp_path / "plain")
    assert [run_row(r)["status"] for r in (fdr, chosen, plain)] == ["debug", "debug", "ok"]
    assert list(collect([tmp_path], complete_only=True)["run_dir"]) == [str(plain.resolve())]
