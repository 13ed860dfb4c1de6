"""Merge clipft runs fine-tuned from one pretrained CLIP, and pick lambda on their validation splits.

Only the shared backbone (the ``backbone.*`` weights) is merged; each run keeps its own head (its
class text, linear head, prompts), as the merging papers score each task with its own head. The
pretrained weights are the runs' :meth:`CLIPMethod.zeroshot_reference` (what WiSE-FT uses), so
the runs must share the backbone config. Every checkpoint is loaded through the file gate and every
val split rebuilt from the run's ``config.yaml`` by :class:`clipft.pipeline.soup.ValScorer`.
Lambda is the grid value with the best mean val accuracy over the runs (the first on a tie); Model
Stock has no lambda. Each run gets ``OUT/<run>/checkpoints/best.ckpt`` (merged backbone, its own
head), a normal checkpoint for ``eval.py ckpt_path=``, ``clipft-export`` and the demo, beside a copy of the
run's ``config.yaml`` (so ``eval.py`` without ``data=`` scores the run's own task); ``merge.json``
and ``merge.md`` hold every run's val accuracy at every lambda.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipft.errors import CheckpointError, ConfigError, DataError
from clipft.merging.weights import apply_task_vector, model_stock, sum_task_vectors, task_vectors, ties_task_vector
from clipft.pipeline.run_dir import comparable_value
from clipft.pipeline.soup import ValScorer, find_ingredients
from clipft.utils.checkpoint_io import read_checkpoint, write_checkpoint
from clipft.utils.io import atomic_write_json, atomic_write_text

METHODS = ("task_arithmetic", "ties", "model_stock")
DEFAULT_LAMBDAS = tuple(i / 10 for i in range(11))  # 0.0 .. 1.0 step 0.1, the references' grid
DEFAULT_TOP_K = 20.0  # ties_minimal.ipynb line 321
BACKBONE = "backbone."


@dataclass
class Task:
    """One run to merge: its checkpoint, its val scorer and its fine-tuned weights."""

    name: str
    path: Path
    checkpoint: dict[str, Any]
    scorer: ValScorer
    state: dict[str, torch.Tensor]


def find_runs(runs: Sequence[str | Path]) -> list[Path]:
    """Each argument: a checkpoint file, a run folder, or a folder of runs (every ``checkpoints/best.ckpt`` below)."""
    missing = [str(run) for run in runs if not Path(run).exists()]
    if missing:
        raise DataError(f"--runs {missing} do not exist: pass run folders, checkpoints or folders of runs")
    paths = [p for run in runs for p in ([Path(run)] if Path(run).is_file() else find_ingredients(run))]
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise DataError(f"a run is given twice in {[str(p) for p in paths]}: pass each fine-tuned run once")
    return paths


def run_names(paths: Sequence[Path]) -> list[str]:
    """The run folder names (``<run>/checkpoints/best.ckpt``), numbered when two are alike."""
    names = [p.parent.parent.name or p.stem for p in paths]
    return names if len(set(names)) == len(names) else [f"{i}_{n}" for i, n in enumerate(names)]


def load_tasks(paths: Sequence[Path], trust: bool = False, device: str = "cpu") -> list[Task]:
    """Every run's module and val split (scored on ``device``); the weights are kept on the CPU."""
    tasks = []
    for name, path in zip(run_names(paths), paths):
        try:
            scorer = ValScorer(path, trust=trust)  # load_module: the checkpoint passes the file gate
        except DataError as exc:
            raise DataError(f"{exc} (merging scores each run on its own validation split)") from None
        state = {k: v.detach().cpu().clone() for k, v in scorer.module.state_dict().items()}
        scorer.module.to(device)
        tasks.append(Task(name, path, read_checkpoint(path), scorer, state))
    check_mergeable(tasks)
    return tasks


def check_mergeable(tasks: Sequence[Task]) -> None:
    """CLIP methods fine-tuned from one backbone config with the same backbone tensors, or one error naming the run."""
    from clipft.methods.clip_method import CLIPMethod

    first = tasks[0]
    for task in tasks:
        if not isinstance(task.scorer.module, CLIPMethod):
            raise CheckpointError(
                f"{task.path} holds a {type(task.scorer.module).__name__}: merging needs CLIP fine-tuning runs "
                "(model=clip_flyp / clip_linear_head / clip_lpft / ...), whose pretrained backbone is known"
            )
        if backbone_config(task) != backbone_config(first):
            raise CheckpointError(
                f"{task.path} was fine-tuned from another backbone (model.clip) than {first.path}: task vectors "
                "only add up for runs that start from one pretrained model"
            )
        a, b = backbone_of(first.state), backbone_of(task.state)
        if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
            raise CheckpointError(f"{task.path}: its backbone weights do not have the keys or shapes of {first.path}'s")


def backbone_config(task: Task) -> Any:
    """The run's ``model.clip``, its ``name_or_path`` compared as a resume compares paths (resolved: one pretrained
    folder reached through a symlink or another checkout is one backbone)."""
    config = (task.checkpoint.get("hyper_parameters") or {}).get("clip")
    if not isinstance(config, Mapping):
        return config
    return {**config, "name_or_path": comparable_value(config.get("name_or_path"))}


def backbone_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith(BACKBONE)}


def pretrained_backbone(task: Task) -> dict[str, torch.Tensor]:
    """theta_0: the backbone the run started from, rebuilt from its config (raises for a random init)."""
    try:
        reference = task.scorer.module.zeroshot_reference()
    except CheckpointError as exc:
        raise CheckpointError(f"merging {task.path}: {exc}") from None
    return {k: v.detach().cpu().clone() for k, v in backbone_of(reference.state_dict()).items()}


def candidates(
    method: str, tasks: Sequence[Task], lambdas: Sequence[float], top_k: float, info: dict[str, Any]
) -> Iterator[tuple[float | None, dict[str, torch.Tensor]]]:
    """``(lambda, merged backbone)`` for every lambda of the grid (one ``(None, ...)`` for Model Stock)."""
    pretrained = pretrained_backbone(tasks[0])
    finetuned = [backbone_of(t.state) for t in tasks]
    if method == "model_stock":
        merged, ratios = model_stock(pretrained, finetuned)
        values = list(ratios.values()) or [0.0]
        info["ratio"] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
        yield None, merged
        return
    taus = task_vectors(pretrained, finetuned)
    tau = sum_task_vectors(taus) if method == "task_arithmetic" else ties_task_vector(taus, top_k)
    del taus
    for lam in lambdas:
        yield lam, apply_task_vector(pretrained, tau, lam)


def check_options(method: str, lambdas: Sequence[float] | None, top_k: float | None) -> tuple[list[float], float]:
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == "model_stock" and lambdas is not None:
        raise ConfigError("--lambdas: Model Stock computes its own ratio per tensor from the runs' angles; drop --lambdas")
    if method != "ties" and top_k is not None:
        raise ConfigError(f"--top-k is TIES-merging's trim; --method {method} does not trim: drop --top-k")
    values = [float(x) for x in (DEFAULT_LAMBDAS if lambdas is None else lambdas)]
    if not values or any(not torch.isfinite(torch.tensor(x)) for x in values):
        raise ConfigError(f"--lambdas must be a non-empty list of finite numbers, got {lambdas}")
    return values, float(DEFAULT_TOP_K if top_k is None else top_k)


def merge_runs(
    method: str, runs: Sequence[str | Path], out_dir: str | Path, lambdas: Sequence[float] | None = None,
    top_k: float | None = None, trust: bool = False, device: str = "cpu",
) -> dict[str, Any]:
    """Merge ``runs``, choose lambda on val, write one checkpoint per run and the report; returns the report."""
    grid_values, top_k_value = check_options(method, lambdas, top_k)
    tasks = load_tasks(find_runs(runs), trust=trust, device=device)
    if method == "model_stock" and len(tasks) < 2:
        raise ConfigError(f"Model Stock needs at least two fine-tuned runs, got {len(tasks)}")
    info: dict[str, Any] = {}
    grid, best = [], None
    for lam, backbone in candidates(method, tasks, grid_values, top_k_value, info):
        accs = {t.name: t.scorer({**t.state, **backbone}) for t in tasks}
        row = {"lambda": lam, "val_accuracy": accs, "mean": sum(accs.values()) / len(accs)}
        grid.append(row)
        if best is None or row["mean"] > best[0]["mean"]:
            best = (row, backbone)
    chosen, backbone = best
    report: dict[str, Any] = {
        "method": method, "lambda": chosen["lambda"], "val_accuracy": chosen["val_accuracy"], "mean_val_accuracy": chosen["mean"],
        "grid": grid, "finetuned": {t.name: t.scorer(t.state) for t in tasks}, **info,
    }
    if method == "ties":
        report["top_k"] = top_k_value
    report["checkpoints"] = save_merged(tasks, backbone, Path(out_dir), report)
    atomic_write_json(Path(out_dir) / "merge.json", report)
    atomic_write_text(Path(out_dir) / "merge.md", merge_table(report))
    return report


def save_merged(tasks: Sequence[Task], backbone: dict[str, torch.Tensor], out_dir: Path, report: dict[str, Any]) -> dict[str, str]:
    """One checkpoint per run: the merged backbone with the run's own head, hyper-parameters and preprocessing."""
    record = {k: report[k] for k in ("method", "lambda", "top_k") if k in report}
    record["runs"] = [str(t.path) for t in tasks]
    written = {}
    for task in tasks:
        ckpt = {k: task.checkpoint[k] for k in ("hyper_parameters", "clipft") if k in task.checkpoint}
        ckpt["clipft"] = {**ckpt.get("clipft", {}), "merge": {**record, "task": task.name}}
        ckpt["state_dict"] = {**task.state, **backbone}
        written[task.name] = str(write_checkpoint(ckpt, out_dir / task.name / "checkpoints" / "best.ckpt"))
        source_config = task.path.parent.parent / "config.yaml"
        if source_config.is_file():  # eval.py ckpt_path=OUT/<run>/... without data= scores the run's own data
            atomic_write_text(out_dir / task.name / "config.yaml", source_config.read_text())
    return written


def merge_table(report: dict[str, Any]) -> str:
    names = list(report["finetuned"])
    lines = [f"| {report['method']} | " + " | ".join(names) + " | mean |", "|---|" + "---:|" * (len(names) + 1)]
    cells = [100 * report["finetuned"][n] for n in names]
    lines.append("| fine-tuned (each run) | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {sum(cells) / len(cells):.2f} |")
    for row in report["grid"]:
        label = "merged" if row["lambda"] is None else f"lambda {row['lambda']:g}"
        if row["lambda"] == report["lambda"]:
            label = f"**{label}** (chosen)"
        values = " | ".join(f"{100 * row['val_accuracy'][n]:.2f}" for n in names)
        lines.append(f"| {label} | {values} | {100 * row['mean']:.2f} |")
    return "\n".join(lines) + "\n"
