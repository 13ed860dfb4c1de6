"""Model soups (Wortsman et al., ICML 2022): average the fine-tuned weights of one sweep.

    python -m clipft.soup SWEEP_DIR [--greedy [--keep-ties]] [--out SOUP_DIR] [--trust-checkpoint]

``SWEEP_DIR`` is a ``-m`` multirun folder (or any folder of run directories). Every run's
``checkpoints/best.ckpt`` is an ingredient. They must share the method, the classes and the
starting model (the backbone config), so their weights lie in one basin; anything else is
refused with the reason. The **uniform** soup averages every ingredient. The **greedy** soup
(``--greedy``) orders them by val accuracy and adds each one only if the soup's val accuracy
improves, as the reference code does (github.com/mlfoundations/model-soups @d5398f1: main.py:152-153
order ties by reversed name order, main.py:181 keeps on ``>``); ``--keep-ties`` keeps an ingredient
on a tie too (the paper's Algorithm 1, ``>=``: clipft's rule before). Either way the soup is never
worse on val than its best ingredient. The result is a checkpoint that ``eval.py ckpt_path=`` and the CLIs load like any
other, plus ``soup.md`` / ``soup.json``: each ingredient's val accuracy against the soup's.
Val is the first run's own validation split, rebuilt from its ``config.yaml``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from clipft.errors import CheckpointError, ClipftError, DataError
from clipft.utils.checkpoint_io import read_checkpoint, write_checkpoint
from clipft.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
# hyper-parameters a sweep may vary across ingredients; everything else must match
SWEPT = ("optimizer", "scheduler", "learning_rates", "label_smoothing", "layer_decay", "sim_weight", "cls_weight")


def find_ingredients(sweep_dir: str | Path) -> list[Path]:
    """``<run>/checkpoints/best.ckpt`` of every run directory under ``sweep_dir``, in name order."""
    found = sorted(Path(sweep_dir).glob("**/checkpoints/best.ckpt"))
    if not found:
        raise DataError(f"{str(sweep_dir)!r} holds no <run>/checkpoints/best.ckpt: give a multirun folder of finished runs")
    return found


def check_compatible(checkpoints: Sequence[dict[str, Any]], paths: Sequence[Path]) -> None:
    """Same method, classes, starting model and tensor shapes, or one error naming the first difference."""
    first, first_hp = checkpoints[0], checkpoints[0].get("hyper_parameters") or {}
    for ckpt, path in zip(checkpoints[1:], paths[1:]):
        hp = ckpt.get("hyper_parameters") or {}
        if (ckpt.get("clipft") or {}).get("module") != (first.get("clipft") or {}).get("module"):
            raise CheckpointError(f"{path} was trained by another method than {paths[0]}: a soup needs one architecture")
        if hp.get("class_names") != first_hp.get("class_names"):
            raise CheckpointError(f"{path} was trained on other classes than {paths[0]}")
        for key in sorted(set(hp) | set(first_hp)):
            if key not in SWEPT and key != "class_names" and hp.get(key) != first_hp.get(key):
                raise CheckpointError(
                    f"{path} differs from {paths[0]} in {key!r}: soups average runs fine-tuned from one model "
                    f"(only {', '.join(SWEPT)} may vary)"
                )
        a, b = first["state_dict"], ckpt["state_dict"]
        if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
            raise CheckpointError(f"{path}: its weights do not have the shapes of {paths[0]}'s")


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of every floating tensor; integer buffers (counters, flags) from the first state."""
    out = {}
    for key, first in states[0].items():
        if torch.is_floating_point(first):
            out[key] = torch.stack([s[key].to(torch.float64) for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


class ValScorer:
    """Val accuracy of a state dict, in one module rebuilt from the first ingredient (data from its run's config)."""

    def __init__(self, ckpt_path: Path, trust: bool = False) -> None:
        from omegaconf import OmegaConf

        from clipft.evaluation.inference import loader_predictions, model_preprocessing
        from clipft.methods.loading import load_module
        from clipft.pipeline.building import build_datamodule
        from clipft.pipeline.run_data import gate_data_node
        from clipft.utils.file_gate import read_yaml_mapping

        config = ckpt_path.parent.parent / "config.yaml"
        if not config.is_file():
            raise DataError(f"{config} is missing: the soup rebuilds the val split from the run's config")
        self.module = load_module(ckpt_path, trust_checkpoint=trust)
        data = read_yaml_mapping(config, CheckpointError).get("data")
        gate_data_node(data, str(config), trust=trust)  # the one gate: a run's config.yaml chooses no code
        self.datamodule = build_datamodule(OmegaConf.create({"data": data}))
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        if not self.datamodule.val_samples:
            raise DataError("the runs have no validation split: a greedy soup has nothing to choose on")
        self.datamodule.configure_preprocessing(**model_preprocessing(self.module))
        self._predict = loader_predictions

    def __call__(self, state: dict[str, torch.Tensor]) -> float:
        self.module.load_state_dict(state)
        probs, targets = self._predict(self.module, self.datamodule.val_dataloader())
        return float((probs.argmax(-1) == targets).float().mean())


def greedy_order(scores: Sequence[float]) -> list[int]:
    """Best val first; ties in reverse name order, as the reference sorts ascending and reverses
    (model-soups @d5398f1 main.py:152-153)."""
    return sorted(range(len(scores)), key=lambda i: scores[i])[::-1]


def make_soup(
    sweep_dir: str | Path, out_dir: str | Path, greedy: bool = False, keep_ties: bool = False, trust: bool = False
) -> dict[str, Any]:
    paths = find_ingredients(sweep_dir)
    checkpoints = [read_checkpoint(p) for p in paths]
    check_compatible(checkpoints, paths)
    scorer = ValScorer(paths[0], trust=trust)
    scores = [scorer(c["state_dict"]) for c in checkpoints]
    order = greedy_order(scores)
    rows = [{"ingredient": str(paths[i]), "val_accuracy": scores[i]} for i in order]
    uniform = average_state_dicts([c["state_dict"] for c in checkpoints])
    report: dict[str, Any] = {"ingredients": rows, "uniform": {"val_accuracy": scorer(uniform), "members": len(paths)}}
    state, members = uniform, list(range(len(paths)))
    if greedy:
        members = [order[0]]
        best = scores[order[0]]
        for i in order[1:]:
            candidate = average_state_dicts([checkpoints[j]["state_dict"] for j in [*members, i]])
            acc = scorer(candidate)
            if acc > best or (keep_ties and acc == best):
                members.append(i)
                best = acc
        state = average_state_dicts([checkpoints[j]["state_dict"] for j in members])
        report["greedy"] = {
            "val_accuracy": best, "members": len(members), "kept": [str(paths[j]) for j in members],
            "tie_rule": ">=" if keep_ties else ">",
        }
    kind = "greedy" if greedy else "uniform"
    out_dir = Path(out_dir)
    soup = dict(checkpoints[members[0]])
    soup = {k: soup[k] for k in ("hyper_parameters", "clipft") if k in soup}
    soup["state_dict"] = state
    soup["clipft"] = {**soup.get("clipft", {}), "soup": {"kind": kind, "ingredients": [str(paths[j]) for j in members]}}
    ckpt_path = write_checkpoint(soup, out_dir / "checkpoints" / "best.ckpt")
    report["checkpoint"] = str(ckpt_path)
    report["kind"] = kind
    atomic_write_json(out_dir / "soup.json", report)
    atomic_write_text(out_dir / "soup.md", soup_table(report))
    return report


def soup_table(report: dict[str, Any]) -> str:
    lines = ["| model | val acc |", "|---|---:|"]
    lines += [f"| {Path(r['ingredient']).parent.parent.name} | {100 * r['val_accuracy']:.2f} |" for r in report["ingredients"]]
    lines.append(f"| uniform soup ({report['uniform']['members']}) | {100 * report['uniform']['val_accuracy']:.2f} |")
    if "greedy" in report:
        lines.append(f"| greedy soup ({report['greedy']['members']}) | {100 * report['greedy']['val_accuracy']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipft.soup", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a multirun folder whose runs fine-tuned one model (checkpoints/best.ckpt each)")
    parser.add_argument("--greedy", action="store_true", help="greedy soup: add ingredients by val accuracy, keep those that do not hurt val")
    parser.add_argument(
        "--keep-ties", action="store_true",
        help="greedy: keep an ingredient that ties the soup's val accuracy (the paper's >=; default: the reference code's >)",
    )
    parser.add_argument("--out", help="output folder (default: SWEEP_DIR/soup_uniform or soup_greedy)")
    parser.add_argument(
        "--trust-checkpoint", action="store_true",
        help="DANGEROUS: build whatever the runs' checkpoints and config.yaml name (only for files you trust)",
    )
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.sweep_dir) / ("soup_greedy" if args.greedy else "soup_uniform"))
    try:
        report = make_soup(args.sweep_dir, out, args.greedy, keep_ties=args.keep_ties, trust=args.trust_checkpoint)
    except ClipftError as exc:
        print(f"clipft error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 1
    print(soup_table(report), end="")
    print(json.dumps({"checkpoint": report["checkpoint"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
