"""The benchmark protocols: conf/protocol/ grids, their resumable sweeps and the paper tables of
``python -m clipft.results --protocol`` (hand-written metrics.json fixtures; one tiny grid end to end)."""

from __future__ import annotations

import csv
import functools
import inspect
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import CONF_DIR, compose, run_script
from omegaconf import OmegaConf

from clipft.results import collect, main
from clipft.results.protocol_render import to_csv, to_latex, to_markdown
from clipft.results.protocols import AVERAGE, PROTOCOLS, harmonic_mean, protocol_table

TESTS = Path(__file__).resolve().parent
ELEVEN = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "flowers102", "food101", "fgvc_aircraft",
          "sun397", "dtd", "eurosat", "ucf101"]
SHOTS = [1, 2, 4, 8, 16]
SEEDS = [1, 2, 3]
# the papers' grids: method x dataset x K x seed (CoOp / CLIP-LoRA few-shot, CoCoOp base-to-novel and
# cross-dataset, CoOp domain generalisation, CLAP's realistic setting, Task Arithmetic's 8 tasks)
PAPER_GRIDS = {
    "fewshot": {"protocol/method": ["linear_probe", "tip_adapter_f", "clap", "coop", "lora"], "data": ELEVEN,
                "data.shots": SHOTS, "seed": SEEDS},
    "base2novel": {"protocol/method": ["zeroshot", "coop", "cocoop", "lora"], "data": ELEVEN, "seed": SEEDS},
    "cross_dataset": {"protocol/method": ["zeroshot", "coop", "cocoop", "lora"], "data": ["imagenet"], "seed": SEEDS},
    "domain_generalization": {"protocol/method": ["zeroshot", "coop", "cocoop", "lora"], "data": ["imagenet"], "seed": SEEDS},
    "realistic": {"protocol/method": ["clap", "coop", "lora"], "data": ELEVEN, "data.shots": SHOTS, "seed": SEEDS},
    "merging8": {"protocol/method": ["frozen_head"], "data": ["sun397", "stanford_cars", "resisc45", "eurosat", "svhn",
                                                             "gtsrb", "mnist", "dtd"], "seed": SEEDS},
}
EVAL_TARGETS = {"cross_dataset": ELEVEN[1:], "domain_generalization": ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]}


def grid_of(params) -> dict[str, list]:
    return {key: [yaml.safe_load(v.strip()) for v in str(value).split(",")] for key, value in params.items()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_protocol_composes_into_the_papers_grid_as_a_resumable_sweep(protocol):
    cfg = compose([f"protocol={protocol}"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.clipft_sweepers.resumable_optuna.ResumableOptunaSweeper"
    assert sweeper.sampler._target_ == "optuna.samplers.GridSampler" and sweeper.storage.endswith(f"/optuna/{protocol}.db")
    grid = grid_of(sweeper.params)
    assert grid == PAPER_GRIDS[protocol]
    assert sweeper.n_trials == math.prod(len(v) for v in grid.values()), "n_trials must be the number of cells"
    assert cfg.optimized_metric == "test_accuracy" and cfg.hydra.sweep.dir.endswith(f"multirun/protocols/{protocol}")
    assert list(cfg.get("eval_targets") or []) == EVAL_TARGETS.get(protocol, [])  # train.yaml's default: []
    if protocol != "merging8":
        assert cfg.data.shot_sampler == "coop" and cfg.data.shot_seed == cfg.seed
        assert cfg.data.classes == ("base" if protocol == "base2novel" else "all")
        assert cfg.model.clip.name_or_path == "openai/clip-vit-base-patch16"


def test_a_protocol_runs_on_slurm_through_the_submitit_launcher():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose(["protocol=fewshot", "hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=1", "hydra.sweeper.n_jobs=8"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.sweeper.n_jobs == 8
    assert cfg.hydra.sweeper._target_.endswith("ResumableOptunaSweeper")


def test_the_papers_datasets_have_data_configs():
    names = {name for grid in PAPER_GRIDS.values() for name in grid["data"]} | {n for t in EVAL_TARGETS.values() for n in t}
    missing = sorted(n for n in names if not (CONF_DIR / "data" / f"{n}.yaml").is_file())
    if missing:
        pytest.skip(f"data configs not written yet: {missing}")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_cell_of_each_grid_composes_with_its_dataset(protocol):
    """What one job of the sweep composes: the grid's last value of each axis (the dataset's own config)."""
    cell = [f"{key}={values[-1]}" for key, values in PAPER_GRIDS[protocol].items()]
    if not (CONF_DIR / "data" / f"{PAPER_GRIDS[protocol]['data'][-1]}.yaml").is_file():
        pytest.skip("the dataset configs are not written yet")
    cfg = compose([f"protocol={protocol}", *cell])
    assert cfg.hydra.runtime.choices["data"] == PAPER_GRIDS[protocol]["data"][-1]
    assert cfg.data.shot_sampler == ("clipft" if protocol == "merging8" else "coop") and cfg.seed == 3
    if protocol != "merging8":
        assert cfg.data.shot_seed == 3 and cfg.data.shots == 16


@pytest.mark.parametrize(("overrides", "expected"), [
    (["data.shots=1"], {"trainer.max_epochs": 50, "model._target_": "clipft.methods.CoOp"}),
    (["data.shots=4"], {"trainer.max_epochs": 100}),
    (["data.shots=16"], {"trainer.max_epochs": 200, "data.batch_size": 32, "data.drop_last": True}),
    (["protocol/method=lora", "data.shots=4"], {"trainer.max_steps": 2000, "trainer.max_epochs": -1}),
    (["protocol/method=zeroshot"], {"train": False, "model._target_": "clipft.methods.CLIPZeroShot"}),
    (["protocol/method=tip_adapter_f"], {"trainer.max_epochs": 20, "data.batch_size": 256, "model.augment_views": 10}),
    (["protocol/method=linear_probe"], {"model._target_": "clipft.methods.CLIPLinearProbe"}),
    (["protocol/method=clap"], {"model.epochs": 300}),
])
def test_method_recipes_follow_the_shots(overrides, expected):
    """Each method brings its paper's schedule; per-K values follow data.shots (CoOp: 50/100/200 epochs)."""
    cfg = compose(["protocol=fewshot", *overrides])
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected


def test_base2novel_uses_cocoops_recipe_on_the_base_classes():
    cfg = compose(["protocol=base2novel", "protocol/method=cocoop"])
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.data.shots, cfg.data.classes) == (1, 10, 16, "base")


# ----------------------------------------------------------------------------- tables from fixtures


def protocol_run(root: Path, name: str, *, method: str, data: str, seed: int, summary: dict, shots: int | None = 16,
                 grid: dict | None = None) -> Path:
    """A protocol cell's folder as train.py leaves it: Hydra record (choices, sweeper params), metrics.json."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    choices = {"protocol": "p", "protocol/method": method, "data": data, "model": "m"}
    record = {"hydra": {"runtime": {"choices": choices}, "sweeper": {"params": grid or {}}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(record))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"protocol/method={method}", f"data={data}", f"seed={seed}"]))
    config = {"run_name": "p", "seed": seed, "data": {"shots": shots, "shot_seed": seed}}
    (run / "metrics.json").write_text(json.dumps({"summary": summary, "config": config, "data": {"train": 10}}))
    return run


def std(*values: float) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.fixture
def fewshot_runs(tmp_path) -> Path:
    """coop and lora on two datasets, seeds 1 and 2, K = 16; coop also at K = 1 on one dataset."""
    grid = {"protocol/method": "lora,coop", "data": "dtd,eurosat"}
    acc = {("coop", "dtd"): (0.60, 0.64), ("coop", "eurosat"): (0.80, 0.82),
           ("lora", "dtd"): (0.70, 0.72), ("lora", "eurosat"): (0.90, 0.86)}
    for (method, data), values in acc.items():
        for seed, value in zip((1, 2), values):
            protocol_run(tmp_path, f"{method}-{data}-{seed}", method=method, data=data, seed=seed,
                         summary={"test_accuracy": value}, grid=grid)
    protocol_run(tmp_path, "coop-dtd-k1", method="coop", data="dtd", seed=1, shots=1, summary={"test_accuracy": 0.40})
    return tmp_path


def test_fewshot_table_is_mean_and_sample_std_over_seeds_with_the_average(fewshot_runs):
    table = protocol_table(collect([fewshot_runs]), "fewshot")
    assert table.rows == [("coop", 1), ("lora", 16), ("coop", 16)], "K ascending, methods in the grid's order"
    assert table.columns == ["dtd", "eurosat"], "the grid's order"
    lora = table.cells[("lora", 16)]
    assert lora[("dtd", "acc")].mean == pytest.approx(0.71) and lora[("dtd", "acc")].std == pytest.approx(std(0.70, 0.72))
    assert lora[("eurosat", "acc")].mean == pytest.approx(0.88) and lora[("eurosat", "acc")].n == 2
    # Average: the mean of the dataset means; its std: over the per-seed averages (0.80, 0.79)
    assert lora[(AVERAGE, "acc")].mean == pytest.approx(0.795) and lora[(AVERAGE, "acc")].std == pytest.approx(std(0.80, 0.79))
    coop_k1 = table.cells[("coop", 1)]
    assert coop_k1[("dtd", "acc")].std is None and (AVERAGE, "acc") not in coop_k1, "no Average without every dataset"


def test_base2novel_hm_is_the_hm_of_the_means_and_the_average_hm_that_of_the_averages(tmp_path):
    values = {"dtd": [(0.80, 0.60), (0.84, 0.56)], "eurosat": [(0.90, 0.70), (0.92, 0.74)]}
    for data, seeds in values.items():
        for seed, (base, novel) in enumerate(seeds, start=1):
            protocol_run(tmp_path, f"{data}-{seed}", method="cocoop", data=data, seed=seed, summary={
                "test_accuracy": base, "test_accuracy_base": base, "test_accuracy_novel": novel,
                "test_hm": harmonic_mean(base, novel)})
    cells = protocol_table(collect([tmp_path]), "base2novel").cells[("cocoop", 16)]
    assert cells[("dtd", "base")].mean == pytest.approx(0.82) and cells[("dtd", "novel")].mean == pytest.approx(0.58)
    assert cells[("dtd", "hm")].mean == pytest.approx(2 * 0.82 * 0.58 / 1.40)
    assert cells[("dtd", "hm")].std == pytest.approx(std(harmonic_mean(0.80, 0.60), harmonic_mean(0.84, 0.56)))
    base, novel = (0.82 + 0.91) / 2, (0.58 + 0.72) / 2
    assert cells[(AVERAGE, "base")].mean == pytest.approx(base) and cells[(AVERAGE, "novel")].mean == pytest.approx(novel)
    assert cells[(AVERAGE, "hm")].mean == pytest.approx(2 * base * novel / (base + novel))
    assert cells[(AVERAGE, "hm")].std == pytest.approx(std(harmonic_mean(0.85, 0.65), harmonic_mean(0.88, 0.65)))
    assert 100 * harmonic_mean(0.6934, 0.7422) == pytest.approx(71.70, abs=0.005), "CoCoOp's zero-shot CLIP average"


def test_cross_dataset_table_puts_the_source_first_and_averages_the_targets_only(tmp_path):
    for seed, (source, a, b) in enumerate([(0.70, 0.90, 0.50), (0.72, 0.92, 0.54)], start=1):
        transfer = {"caltech101": {"accuracy": a, "classes": 100}, "dtd": {"accuracy": b, "classes": 47}}
        protocol_run(tmp_path, f"coop-{seed}", method="coop", data="imagenet", seed=seed,
                     summary={"test_accuracy": source, "transfer": transfer})
    table = protocol_table(collect([tmp_path]), "cross_dataset")
    cells = table.cells[("coop", 16)]
    assert table.columns == ["imagenet", "caltech101", "dtd"] and table.sources == ["imagenet"]
    assert cells[(AVERAGE, "acc")].mean == pytest.approx((0.91 + 0.52) / 2), "ImageNet is not averaged in"
    assert cells[(AVERAGE, "acc")].std == pytest.approx(std(0.70, 0.73))


def test_eval_runs_of_a_checkpoint_add_targets_to_the_run_that_trained_it(tmp_path):
    """eval.py ckpt_path=RUN/checkpoints/best.ckpt data=T retarget=true: its summary.transfer joins RUN's row (method,
    seed); a zero-shot cell on a target (config eval_targets) is a target column too, not a source."""
    for seed, (source, target) in enumerate([(0.70, 0.40), (0.74, 0.44)], start=1):
        run = protocol_run(tmp_path, f"coop-{seed}", method="coop", data="imagenet", seed=seed, summary={"test_accuracy": source})
        evaluation = protocol_run(run / "transfer", "dtd", method="unused", data="dtd", seed=42, summary={
            "test_accuracy": target, "transfer": {"dtd": {"accuracy": target, "classes": 47}}})
        metrics = json.loads((evaluation / "metrics.json").read_text())
        (evaluation / "metrics.json").write_text(json.dumps({**metrics, "checkpoint": str(run / "checkpoints" / "best.ckpt")}))
    zeroshot = protocol_run(tmp_path, "zs-dtd", method="zeroshot", data="dtd", seed=1, summary={"test_accuracy": 0.45})
    metrics = json.loads((zeroshot / "metrics.json").read_text())
    metrics["config"]["eval_targets"] = ["dtd"]
    (zeroshot / "metrics.json").write_text(json.dumps(metrics))
    table = protocol_table(collect([tmp_path]), "cross_dataset")
    assert table.columns == ["imagenet", "dtd"] and table.sources == ["imagenet"]
    coop = table.cells[("coop", 16)]
    assert coop[("dtd", "acc")].mean == pytest.approx(0.42) and coop[("dtd", "acc")].n == 2
    assert coop[("imagenet", "acc")].mean == pytest.approx(0.72)
    assert table.cells[("zeroshot", 16)][("dtd", "acc")].mean == pytest.approx(0.45)
    assert (AVERAGE, "acc") not in coop, "one target: its column is the average, not printed twice"
    assert "Average" not in to_markdown(table)


def test_merging8_names_a_merged_models_row_after_the_merge_folder(tmp_path):
    """python -m clipft.merging --out merged/task_arithmetic, then eval.py on each OUT/<task>/checkpoints/best.ckpt:
    those eval runs make the merged model's row; the fine-tuned runs keep theirs."""
    for data, tuned, merged in (("dtd", 0.80, 0.60), ("eurosat", 0.98, 0.70)):
        protocol_run(tmp_path / "tuned", data, method="frozen_head", data=data, seed=1, shots=None, summary={"test_accuracy": tuned})
        evaluation = protocol_run(tmp_path / "evals", data, method="unused", data=data, seed=1, shots=None,
                                  summary={"test_accuracy": merged})
        ckpt = tmp_path / "merged" / "task_arithmetic" / f"{data}-run" / "checkpoints" / "best.ckpt"
        metrics = json.loads((evaluation / "metrics.json").read_text())
        (evaluation / "metrics.json").write_text(json.dumps({**metrics, "checkpoint": str(ckpt)}))
    table = protocol_table(collect([tmp_path]), "merging8")
    assert sorted(table.rows) == [("frozen_head", None), ("task_arithmetic", None)] and not table.by_shots
    assert table.cells[("task_arithmetic", None)][(AVERAGE, "acc")].mean == pytest.approx(0.65)
    assert table.cells[("frozen_head", None)][(AVERAGE, "acc")].mean == pytest.approx(0.89)


def test_markdown_csv_and_latex_parse_and_agree(fewshot_runs, tmp_path):
    out = tmp_path / "out"
    assert main(["--protocol", "fewshot", str(fewshot_runs), "--out", str(out / "t.md"), "--csv", str(out / "t.csv"),
                 "--latex", str(out / "t.tex"), "--plot", str(out / "t.png")]) == 0
    md = [line for line in (out / "t.md").read_text().splitlines() if line.startswith("|")]
    assert md[0].split("|")[1:-1] == [" Method ", " K ", " dtd ", " eurosat ", " Average "]
    assert len({line.count("|") for line in md}) == 1 and len(md) == 2 + 3
    assert "| lora | 16 | 71.00 ± 1.41 | 88.00 ± 2.83 | 79.50 ± 0.71 |" in md
    rows = list(csv.DictReader((out / "t.csv").open()))
    lora = next(r for r in rows if r["method"] == "lora")
    assert float(lora["Average mean"]) == pytest.approx(79.5) and float(lora["dtd std"]) == pytest.approx(100 * std(0.70, 0.72), abs=1e-3)
    tex = (out / "t.tex").read_text()
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    lines = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert tex.startswith(r"\begin{tabular}{llccc}") and tex.rstrip().endswith(r"\end{tabular}")
    assert len(lines) == 3 and all(line.count("&") == 4 for line in lines)
    assert r"$\mathbf{79.50 \pm 0.71}$" in tex, "the best 16-shot Average is bold"
    assert (out / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_a_protocol_without_its_numbers_says_what_it_needs(fewshot_runs, capsys):
    assert main(["--protocol", "base2novel", str(fewshot_runs)]) == 1
    assert "test_accuracy_base" in capsys.readouterr().err


def test_render_functions_show_one_seed_without_a_spread(tmp_path):
    protocol_run(tmp_path, "a", method="clap", data="dtd", seed=1, summary={"test_accuracy": 0.5})
    table = protocol_table(collect([tmp_path]), "realistic")
    assert "| clap | 50.00 |" in to_markdown(table).splitlines()  # one dataset: no Average column repeating it
    assert to_csv(table).splitlines()[1] == "clap,16,50.0000,,1"
    assert "clap & $50.00$ \\\\" in to_latex(table)


# ----------------------------------------------------------------------------- resumable grids


class Killed(BaseException):
    """What Ctrl-C does to a sweep: not an ``Exception``, so the sweeper does not catch it."""


class CellLauncher:
    """Stands in for Hydra's launcher: records each cell's overrides; raises Killed when cell ``kill_at`` starts."""

    def __init__(self, kill_at: int | None = None, on_cell=None):
        self.kill_at, self.ran, self.on_cell = kill_at, [], on_cell

    def launch(self, overrides, initial_job_idx):
        returns = []
        for job in overrides:
            if len(self.ran) == self.kill_at:
                raise Killed
            self.ran.append(tuple(sorted(job)))
            if self.on_cell:
                self.on_cell(job)
            returns.append(SimpleNamespace(return_value=0.5))
        return returns


def grid_sweep(sweep_dir: Path, storage: str, params: dict, n_trials: int, launcher: CellLauncher, study: str = "g"):
    """One ``python train.py -m protocol=...`` process: a fresh resumable sweeper on the stored study."""
    optuna = pytest.importorskip("optuna")
    from hydra_plugins.clipft_sweepers.resumable_optuna import ResumableOptunaSweeper

    sweeper = ResumableOptunaSweeper(
        sampler=functools.partial(optuna.samplers.GridSampler), direction="maximize", storage=storage, study_name=study,
        n_trials=n_trials, n_jobs=1, max_failure_rate=1.0, search_space=None, custom_search_space=None,
        params=OmegaConf.create(params))
    impl = sweeper.sweeper
    impl.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    impl.launcher, impl.hydra_context, impl.job_idx = launcher, object(), 0
    sweeper.sweep([])
    return launcher.ran


GRID = {"protocol/method": "coop,lora", "data.shots": "1,16", "seed": "1,2"}


def test_a_grid_stopped_between_cells_resumes_without_redoing_one(tmp_path):
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    first = grid_sweep(tmp_path, storage, GRID, 3, CellLauncher())  # stopped after 3 of the 8 cells
    rest = grid_sweep(tmp_path, storage, GRID, 8, CellLauncher())
    assert len(first) == 3 and len(rest) == 5 and len(set(first + rest)) == 8, "every cell once"
    assert grid_sweep(tmp_path, storage, GRID, 8, CellLauncher()) == [], "a finished grid runs nothing"


def test_a_grid_killed_mid_cell_runs_every_cell_exactly_once(tmp_path):
    import random

    random.seed(0)  # GridSampler draws the next cell with random.choice
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    first = CellLauncher(kill_at=2)
    with pytest.raises(Killed):
        grid_sweep(tmp_path, storage, GRID, 8, first)
    rest = grid_sweep(tmp_path, storage, GRID, 8, CellLauncher())
    assert sorted(first.ran + rest) == sorted(set(first.ran + rest)) and len(set(first.ran + rest)) == 8


def test_a_grid_with_more_trials_than_cells_runs_each_cell_once_after_a_kill(tmp_path):
    import random

    random.seed(0)
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    first = CellLauncher(kill_at=3)
    with pytest.raises(Killed):
        grid_sweep(tmp_path, storage, GRID, 1000, first)
    rest = grid_sweep(tmp_path, storage, GRID, 1000, CellLauncher())
    assert len(first.ran + rest) == 8 and len(set(first.ran + rest)) == 8


# ----------------------------------------------------------------------------- end to end


def synthetic_signs_datamodule(**kwargs):
    """The synthetic demo set for the e2e grid: the protocol's data keys (data.shot_sampler, data.classes) pass
    through when the datamodule takes them, and are dropped where it does not."""
    from clipft.data import SyntheticSignsDataModule
    from clipft.data.base import ImageClassificationDataModule

    known = set(inspect.signature(SyntheticSignsDataModule).parameters) | set(inspect.signature(ImageClassificationDataModule).parameters)
    return SyntheticSignsDataModule(**{k: v for k, v in kwargs.items() if k not in ("shot_sampler", "classes") or k in known})


@pytest.mark.slow
def test_fewshot_grid_end_to_end_resumes_past_a_finished_cell(tmp_path, tiny_clip_dir, synthetic_root, monkeypatch):
    """A 2-cell fewshot grid (linear probe, K = 1 and 2) whose first cell already finished: the rerun trains only
    the other, and the protocol table reads both."""
    sweep_dir = tmp_path / "multirun" / "protocols" / "e2e"
    storage = f"sqlite:///{tmp_path / 'multirun' / 'optuna' / 'e2e.db'}"
    (tmp_path / "multirun" / "optuna").mkdir(parents=True)

    def finished_cell(job):  # what the killed sweep left: one cell's folder with its metrics.json
        shots = int(dict(o.split("=", 1) for o in job)["data.shots"])
        protocol_run(sweep_dir, "earlier_0", method="linear_probe", data="synthetic_signs", seed=1, shots=shots,
                     summary={"test_accuracy": 0.5})
    earlier = grid_sweep(sweep_dir, storage, {"protocol/method": "choice(linear_probe)", "data.shots": "1,2"}, 1,
                         CellLauncher(on_cell=finished_cell), study="e2e")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    args = ["-m", "protocol=fewshot", "hydra.sweeper.study_name=e2e", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.params.data=synthetic_signs", "hydra.sweeper.params.seed=1", "protocol/method=choice(linear_probe)",
            "data.shots=1,2", "data._target_=test_protocols.synthetic_signs_datamodule", f"data.root={synthetic_root}",
            "data.train_per_class=24", "data.test_per_class=6", f"model.clip.name_or_path={tiny_clip_dir}",
            "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.enable_model_summary=false", "logger=none"]
    proc = run_script("train.py", args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 trials already ended, 1 to go of n_trials=2" in proc.stdout + proc.stderr
    jobs = [d for d in sweep_dir.iterdir() if (d / "metrics.json").is_file()]
    assert len(jobs) == 2, "the finished cell was not run again"
    new = next(d for d in jobs if d.name != "earlier_0")
    ran = yaml.safe_load((new / ".hydra" / "overrides.yaml").read_text())
    assert {f"data.shots={s}" for s in (1, 2)} - set(ran) == {earlier[0][0]}, "the rerun trained the other K"
    table = protocol_table(collect([sweep_dir]), "fewshot")
    assert sorted(table.rows) == [("linear_probe", 1), ("linear_probe", 2)]
    assert re.search(r"\| linear_probe \| [12] \| 50\.00 \|", to_markdown(table))
