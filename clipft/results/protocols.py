"""The benchmark protocols' tables: rows = methods, columns = datasets + Average, cells mean ± std over seeds.

A pure function of the rows frame (:func:`clipft.results.rows.collect`) and of each run's Hydra record,
like the seed table. What a run contributes is read from its ``metrics.json`` summary as the pipeline
writes it; nothing here knows a dataset by name (a column is the run's data config name or a name in
its ``summary.transfer``):

* ``fewshot``, ``realistic``, ``merging8``: ``test_accuracy`` under the run's data config, plus every
  ``transfer[<name>].accuracy``; Average over all columns. An ``eval.py`` run of a checkpoint that no run
  folder holds (``python -m clipft.merging --out OUT``: ``OUT/<task>/checkpoints/best.ckpt``) is a row
  named after ``OUT`` (the merged model's);
* ``cross_dataset``, ``domain_generalization``: the source (``test_accuracy`` under the run's data
  config) and each target: a ``transfer`` score (of the run, or of an ``eval.py`` run of its checkpoint,
  which joins the row of the run that trained it) or a column named in the runs' ``eval_targets``
  (zero-shot cells on a target); Average over the targets only, as CoCoOp's Table 2 prints it;
* ``base2novel``: ``test_accuracy_base``, ``test_accuracy_novel`` and ``test_hm`` per dataset. A dataset's
  HM is the HM of its mean base and mean novel accuracy, the Average's HM the HM of the averaged base
  and novel accuracies: CoCoOp's Table 1 (zero-shot CLIP: HM(69.34, 74.22) = 71.70).

Spread: the sample std (ddof=1) over seeds, of the cell's values; for an Average, of the per-seed
averages (only seeds with every column). Accuracies stay fractions here; :mod:`~clipft.results.protocol_render`
prints them in %. The row and column order is the grid's (``hydra.sweeper.params`` of the runs' Hydra
record), then the order of appearance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clipft.errors import ConfigError, DataError
from clipft.results.records import HYDRA_DIR, METRICS_FILE, hydra_choices, is_run_dir, read_json, read_yaml, run_config

PROTOCOLS = ("fewshot", "base2novel", "cross_dataset", "domain_generalization", "realistic", "merging8")
TRANSFER_PROTOCOLS = ("cross_dataset", "domain_generalization")
BASE2NOVEL_METRICS = ("base", "novel", "hm")
AVERAGE = "Average"
# the config-group choice that names a protocol run's method (conf/protocol/method/)
METHOD_CHOICE = "protocol/method"


@dataclass(frozen=True)
class Cell:
    """One table cell: the mean over seeds, the sample std (None for one seed) and how many seeds."""

    mean: float
    std: float | None
    n: int


@dataclass
class ProtocolTable:
    """The table a paper prints; ``cells[(method, shots)][(column, metric)]``."""

    protocol: str
    columns: list[str]
    metrics: tuple[str, ...]
    rows: list[tuple[str, int | None]]
    cells: dict[tuple[str, int | None], dict[tuple[str, str], Cell]] = field(default_factory=dict)
    # the columns a source run was trained on (cross-dataset / domain generalisation), left out of the Average
    sources: list[str] = field(default_factory=list)

    @property
    def by_shots(self) -> bool:
        """More than one K among the rows: the tables show a ``K`` column."""
        return len({shots for _, shots in self.rows}) > 1


def check_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise ConfigError(f"--protocol {name!r} is not a protocol; choose from {', '.join(PROTOCOLS)}")
    return name


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def run_values(summary: dict[str, Any], data: str, protocol: str, evaluated: bool = False) -> list[tuple[str, str, float]]:
    """``(column, metric, value)`` of one run's summary under ``protocol``; an eval.py run of a trained run's
    checkpoint (``evaluated``) adds only its ``transfer`` scores (its own test is the trained run's)."""
    if protocol == "base2novel":
        base, novel = _number(summary.get("test_accuracy_base")), _number(summary.get("test_accuracy_novel"))
        hm = _number(summary.get("test_hm"))
        if hm is None and base is not None and novel is not None:
            hm = harmonic_mean(base, novel)
        found = zip(BASE2NOVEL_METRICS, (base, novel, hm))
        return [(data, metric, value) for metric, value in found if value is not None]
    values: dict[str, float] = {}  # one value per column: a transfer score of the run's own data replaces its test
    accuracy = _number(summary.get("test_accuracy"))
    if accuracy is not None and not evaluated:
        values[data] = accuracy
    for name, result in (summary.get("transfer") or {}).items():
        target = _number(result.get("accuracy") if isinstance(result, dict) else result)
        if target is not None:
            values[str(name)] = target
    return [(column, "acc", value) for column, value in values.items()]


def _hydra_record(run_dir: Path) -> dict[str, Any]:
    return read_yaml(run_dir / HYDRA_DIR / "hydra.yaml") or {}


def _grid_order(record: dict[str, Any], key: str) -> list[str]:
    params = ((record.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    value = params.get(key)
    if value is None:
        return []
    text = str(value)
    if text.startswith("choice(") and text.endswith(")"):
        text = text[len("choice(") : -1]
    return [part.strip() for part in text.split(",") if part.strip()]


def trained_run(run_dir: Path) -> tuple[Path, str | None]:
    """The run that trained the model an eval.py run scored (``checkpoint: <run>/checkpoints/x.ckpt``) and,
    for a checkpoint outside any run (a merge's ``OUT/<task>/checkpoints/best.ckpt``), the name of ``OUT``."""
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else {}
    ckpt = metrics.get("checkpoint")
    if not ckpt:
        return run_dir, None
    folders = Path(str(ckpt)).parents
    if len(folders) > 1 and is_run_dir(folders[1]):
        return folders[1], None
    return run_dir, folders[2].name if len(folders) > 2 else None


def run_facts(run_dir: Path, fallback_method: Any) -> dict[str, Any]:
    """Method, seed, K and evaluation targets of the run that trained the scored model."""
    source, produced_by = trained_run(run_dir)
    metrics = read_json(source / METRICS_FILE) if (source / METRICS_FILE).is_file() else {}
    config = run_config(source, metrics)
    data_cfg = config.get("data") or {}
    choices = hydra_choices(source)
    # a protocol cell names its recipe (protocol/method); a plain run its model config (model=clip_coop)
    method = produced_by or choices.get(METHOD_CHOICE) or choices.get("model") or fallback_method
    return {"method": str(method), "seed": config.get("seed"), "shots": data_cfg.get("shots"),
            "targets": [t.get("data") if isinstance(t, dict) else t for t in config.get("eval_targets") or []],
            "evaluated": source != run_dir,
            "record": _hydra_record(source)}


def long_values(frame: pd.DataFrame, protocol: str) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """One line per (run, column, metric): method, shots, column, metric, seed, value; the grid's orders and
    the evaluation targets (``eval_targets`` of the runs' configs)."""
    lines, order = [], {"method": [], "column": [], "targets": []}
    for row in frame[frame["status"] == "ok"].itertuples(index=False):
        facts = run_facts(Path(str(row.run_dir)), row.method)
        for name, key in (("method", METHOD_CHOICE), ("column", "data")):
            order[name] += [v for v in _grid_order(facts["record"], key) if v not in order[name]]
        order["targets"] += [t for t in facts["targets"] if t not in order["targets"]]
        for column, metric, value in run_values(row.summary or {}, str(row.data), protocol, facts["evaluated"]):
            transferred = column != str(row.data) or facts["evaluated"]
            lines.append({"method": facts["method"], "shots": facts["shots"], "column": column, "metric": metric,
                          "seed": facts["seed"], "value": value, "target": transferred or column in facts["targets"]})
    if not lines:
        raise DataError(f"no finished run among the given paths reports what the {protocol} table needs "
                        f"({_needs(protocol)} in metrics.json summary)")
    return pd.DataFrame(lines), order


def _needs(protocol: str) -> str:
    if protocol == "base2novel":
        return "test_accuracy_base / test_accuracy_novel"
    return "test_accuracy or transfer"


def _ordered(values: list[Any], preferred: list[str]) -> list[Any]:
    seen = list(dict.fromkeys(values))
    first = [v for v in preferred if v in seen]
    return first + [v for v in seen if v not in first]


def cell_of(values: pd.Series) -> Cell:
    numbers = [float(v) for v in values]
    std = float(pd.Series(numbers).std(ddof=1)) if len(numbers) > 1 else None
    return Cell(float(sum(numbers) / len(numbers)), std, len(numbers))


def protocol_table(frame: pd.DataFrame, protocol: str) -> ProtocolTable:
    """The ``protocol``'s table of the runs in ``frame`` (a rows frame: :func:`clipft.results.rows.collect`)."""
    check_protocol(protocol)
    lines, order = long_values(frame, protocol)
    lines["shots"] = pd.Series([None if pd.isna(k) else int(k) for k in lines["shots"]], index=lines.index, dtype=object)
    sources = []
    if protocol in TRANSFER_PROTOCOLS:  # the Average is over the targets: transferred scores and eval_targets
        targets_seen = set(lines.loc[lines["target"], "column"])
        sources = [c for c in _ordered(lines["column"].tolist(), order["column"]) if c not in targets_seen]
    targets = [c for c in _ordered(lines["column"].tolist(), [*order["column"], *order["targets"]]) if c not in sources]
    methods = _ordered(lines["method"].tolist(), order["method"])
    shots = sorted({s for s in lines["shots"]}, key=lambda s: (s is None, s or 0))
    table = ProtocolTable(protocol, [*sources, *targets], BASE2NOVEL_METRICS if protocol == "base2novel" else ("acc",),
                          [], sources=sources)
    for k in shots:
        for method in methods:
            part = lines[(lines["method"] == method) & (lines["shots"].map(lambda s, k=k: s == k))]
            if part.empty:
                continue
            cells = {(c, m): cell_of(g["value"]) for (c, m), g in part.groupby(["column", "metric"], sort=False)}
            if protocol == "base2novel":
                _hm_of_means(cells)
            cells.update(average_cells(part, [c for c in table.columns if c not in sources], table.metrics))
            table.rows.append((method, k))
            table.cells[(method, k)] = cells
    return table


def _hm_of_means(cells: dict[tuple[str, str], Cell]) -> None:
    """A dataset's HM: the HM of its mean base and novel accuracy; the std stays the per-seed HMs'."""
    for (column, metric), cell in list(cells.items()):
        base, novel = cells.get((column, "base")), cells.get((column, "novel"))
        if metric == "hm" and base is not None and novel is not None:
            cells[(column, "hm")] = Cell(harmonic_mean(base.mean, novel.mean), cell.std, cell.n)


def average_cells(part: pd.DataFrame, columns: list[str], metrics: tuple[str, ...]) -> dict[tuple[str, str], Cell]:
    """The Average column of one row: over ``columns``, only when the row has every one of them and there are
    two or more (an Average of one dataset would print its column twice)."""
    per_metric = {m: part[part["metric"] == m] for m in metrics}
    out: dict[tuple[str, str], Cell] = {}
    if len(columns) < 2 or any(set(columns) - set(per_metric[m]["column"]) for m in metrics if m != "hm"):
        return out
    for metric in (m for m in metrics if m != "hm"):
        rows = per_metric[metric]
        means = rows.groupby("column")["value"].mean()
        out[(AVERAGE, metric)] = Cell(float(means[columns].mean()), *_seed_spread(rows, columns))
    if "hm" in metrics and (AVERAGE, "base") in out:
        base, novel = out[(AVERAGE, "base")], out[(AVERAGE, "novel")]
        per_seed = pd.concat([_per_seed_means(per_metric[m], columns) for m in ("base", "novel")], axis=1).dropna()
        hms = [harmonic_mean(b, n) for b, n in per_seed.itertuples(index=False)]
        std = float(pd.Series(hms).std(ddof=1)) if len(hms) > 1 else None
        out[(AVERAGE, "hm")] = Cell(harmonic_mean(base.mean, novel.mean), std, min(base.n, novel.n))
    return out


def _per_seed_means(rows: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The average over ``columns`` of each seed that has all of them, indexed by seed."""
    table = rows.pivot_table(index="seed", columns="column", values="value", aggfunc="mean")
    if not set(columns) <= set(table.columns):
        return pd.Series(dtype=float)
    return table[columns].dropna().mean(axis=1).sort_index()


def _seed_spread(rows: pd.DataFrame, columns: list[str]) -> tuple[float | None, int]:
    means = _per_seed_means(rows, columns)
    std = float(means.std(ddof=1)) if len(means) > 1 else None
    return std, max(len(means), 1)
