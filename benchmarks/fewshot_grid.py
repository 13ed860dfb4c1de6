"""The round-12 few-shot grid's wall time with and without feature banks, and its accuracies (issue 34).

Runs ``train.py experiment=sign_clip58_fewshot`` once per cell (method x K x draw, and full data) in one of two
modes, one process per run, timing each process from start to exit (model load, bank build, training, test):

* ``pixels``: no bank (``callbacks.feature_bank=null``): the frozen image tower on every batch, as before banks;
* ``bank``: ``callbacks=[default,feature_bank]``: 10 stored augmented views, one bank shared by every run.

    python benchmarks/fewshot_grid.py run --mode bank --out outputs/grid --data-root ../shared/data/traffic_sign_58
    python benchmarks/fewshot_grid.py run --mode pixels --draws 0 --out outputs/grid --data-root ...
    python benchmarks/fewshot_grid.py report --out outputs/grid [--prefix-bank r15_bank --prefix-pixels r15_pix]

Run folders are ``<out>/<prefix>_fs<K>_<method>_d<D>`` and ``<out>/<prefix>_full_<method>``; a folder with a
metrics.json is skipped (a killed grid resumes); wall times are appended to ``<out>/<prefix>_times.tsv``.
``report`` prints, per method, the wall time of the cells both modes ran (the ratio), the bank's time for the
whole grid, and TEST accuracy mean +- sample std per K in each mode. LoRA, the grid's fifth method, trains its
image tower: a bank cannot serve it, so it is not run here (its time is the same in both modes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"lp": ["model=clip_linear_probe"], "clap": ["model=clip_clap"], "tipf": ["model=clip_tip_adapter_f"],
           "coop": ["model=clip_coop", "model.optimizer.lr=0.2"], "kgcoop": ["model=clip_kgcoop", "model.optimizer.lr=0.2"],
           "taskres": ["model=clip_taskres"], "lppp": ["model=clip_lp_plus_plus"]}
MODES = {"pixels": ["callbacks.feature_bank=null"], "bank": ["callbacks=[default,feature_bank]"]}
SHOTS = (1, 4, 16)


def cells(methods: list[str], draws: list[int]) -> list[tuple[str, str, list[str]]]:
    """``(method, run name suffix, overrides)`` for every cell of the grid."""
    out = []
    for method in methods:
        for shots in SHOTS:
            out += [(method, f"fs{shots}_{method}_d{d}", [f"data.shots={shots}", f"data.shot_seed={d}"]) for d in draws]
        out.append((method, f"full_{method}", ["data.shots=null"]))
    return out


def run_grid(args: argparse.Namespace) -> None:
    out, prefix = Path(args.out), args.prefix or f"grid_{args.mode}"
    out.mkdir(parents=True, exist_ok=True)
    for method, suffix, overrides in cells(args.methods, args.draws):
        run_dir = out / f"{prefix}_{suffix}"
        if (run_dir / "metrics.json").is_file():
            continue
        command = [sys.executable, str(ROOT / "train.py"), "experiment=sign_clip58_fewshot", f"data.root={args.data_root}",
                   "plots=false", *METHODS[method], *MODES[args.mode], *overrides, f"hydra.run.dir={run_dir}"]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        with open(out / f"{prefix}_times.tsv", "a") as handle:
            handle.write(f"{run_dir.name}\t{result.returncode}\t{wall:.1f}\n")
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{run_dir.name} failed (exit {result.returncode})")


def read_times(out: Path, prefix: str) -> dict[str, float]:
    times = {}
    path = out / f"{prefix}_times.tsv"
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, code, wall = line.split("\t")[:3]
        if code == "0":
            times[name] = float(wall)
    return times


def accuracy(run_dir: Path) -> float | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text())["summary"].get("test_accuracy") if path.is_file() else None


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    times = {mode: read_times(out, getattr(args, f"prefix_{mode}")) for mode in MODES}
    print("| method | cells both modes ran | pixels wall | bank wall | ratio | bank: whole grid (cells) |")
    print("|:--|--:|--:|--:|--:|--:|")
    totals = {"pixels": 0.0, "bank": 0.0, "grid": 0.0}
    for method in args.methods:
        names = [suffix for m, suffix, _ in cells([method], [0, 1, 2]) if m == method]
        both = [s for s in names if f"{args.prefix_pixels}_{s}" in times["pixels"] and f"{args.prefix_bank}_{s}" in times["bank"]]
        pix = sum(times["pixels"][f"{args.prefix_pixels}_{s}"] for s in both)
        bank = sum(times["bank"][f"{args.prefix_bank}_{s}"] for s in both)
        grid = [times["bank"][f"{args.prefix_bank}_{s}"] for s in names if f"{args.prefix_bank}_{s}" in times["bank"]]
        totals["pixels"] += pix
        totals["bank"] += bank
        totals["grid"] += sum(grid)
        ratio = f"{pix / bank:.1f}x" if both and bank else "-"
        print(f"| {method} | {len(both)} | {pix:.0f} s | {bank:.0f} s | {ratio} | {sum(grid):.0f} s ({len(grid)}) |")
    if totals["bank"]:
        print(f"| all | | {totals['pixels']:.0f} s | {totals['bank']:.0f} s | {totals['pixels'] / totals['bank']:.1f}x | {totals['grid']:.0f} s |")
    print()
    print("| method | mode | 1-shot | 4-shot | 16-shot | full |")
    print("|:--|:--|--:|--:|--:|--:|")
    for method in args.methods:
        for mode in MODES:
            prefix = getattr(args, f"prefix_{mode}")
            row = []
            for shots in SHOTS:
                values = [accuracy(out / f"{prefix}_fs{shots}_{method}_d{d}") for d in (0, 1, 2)]
                row.append(spread([v for v in values if v is not None]))
            row.append(spread([v for v in [accuracy(out / f"{prefix}_full_{method}")] if v is not None]))
            print(f"| {method} | {mode} | " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--mode", choices=list(MODES), required=True)
    run.add_argument("--data-root", required=True)
    run.add_argument("--prefix", help="run-name prefix (default grid_<mode>)")
    for p in (run, sub.add_parser("report")):
        p.add_argument("--out", required=True)
        p.add_argument("--methods", nargs="+", default=["lp", "clap", "tipf", "coop"], choices=list(METHODS))
    run.add_argument("--draws", nargs="+", type=int, default=[0, 1, 2])
    rep = sub.choices["report"]
    rep.add_argument("--prefix-bank", default="grid_bank")
    rep.add_argument("--prefix-pixels", default="grid_pixels")
    args = parser.parse_args()
    run_grid(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
