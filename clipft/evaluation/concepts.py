"""Zero-shot transfer between two sign sets, split by what they share.

A concept map (``class_descriptions/concepts_gtsrb_traffic_signs.yaml``) pairs the classes of
two datasets that mean the same sign. Accuracy on a test set is then reported three ways:
overall, on the classes whose concept the other set also has (what an encoder aligned on the
other set could have learnt), and on the classes only this set has (pure language transfer).

    python -m clipft.evaluation.concepts RUN/metrics.json --map class_descriptions/concepts_gtsrb_traffic_signs.yaml --dataset traffic_signs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clipft.errors import ConfigError


def load_concept_map(path: str | Path) -> dict[str, Any]:
    """``{"datasets": [a, b], "concepts": {name: {a: [ids], b: [ids], ...}}}``, checked."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"concept map {str(path)!r} cannot be read ({exc})") from None
    datasets = data.get("datasets") if isinstance(data, dict) else None
    concepts = data.get("concepts") if isinstance(data, dict) else None
    if not (isinstance(datasets, list) and len(datasets) == 2 and isinstance(concepts, dict) and concepts):
        raise ConfigError(f"concept map {str(path)!r} needs 'datasets: [a, b]' and a non-empty 'concepts' mapping")
    for name, entry in concepts.items():
        for dataset in datasets:
            ids = (entry or {}).get(dataset)
            if not (isinstance(ids, list) and ids and all(isinstance(i, int) and i >= 0 for i in ids)):
                raise ConfigError(f"concept map {str(path)!r}: concept {name!r} needs a list of class ids for {dataset!r}")
    return data


def shared_class_ids(concept_map: Mapping[str, Any], dataset: str) -> set[int]:
    if dataset not in concept_map["datasets"]:
        raise ConfigError(f"dataset {dataset!r} is not in the concept map (it has {concept_map['datasets']})")
    return {i for entry in concept_map["concepts"].values() for i in entry[dataset]}


def split_accuracy(report: Mapping[str, Any], class_names: Sequence[str], shared: set[int]) -> dict[str, Any]:
    """Image-weighted accuracy over all / shared / unshared classes of a ``classification_report``."""
    per_class = report["per_class"]
    totals = {"all": [0, 0], "shared": [0, 0], "unshared": [0, 0]}
    for class_id, name in enumerate(class_names):
        entry = per_class.get(name) or {}
        support, accuracy = int(entry.get("support") or 0), entry.get("accuracy")
        if not support or accuracy is None:
            continue
        correct = round(accuracy * support)
        for key in ("all", "shared" if class_id in shared else "unshared"):
            totals[key][0] += correct
            totals[key][1] += support
    out: dict[str, Any] = {}
    for key, (correct, n) in totals.items():
        out[f"{key}_accuracy"] = correct / n if n else None
        out[f"{key}_images"] = n
    out["shared_classes"] = sum(1 for c in shared if c < len(class_names))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipft.evaluation.concepts", description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="a run's metrics.json (eval.py or train.py)")
    parser.add_argument("--map", required=True, help="the concept map YAML")
    parser.add_argument("--dataset", required=True, help="which side of the map the run's test set is")
    parser.add_argument("--section", default="test", help="metrics.json section holding the report (default: test)")
    args = parser.parse_args(argv)
    metrics = json.loads(Path(args.metrics).read_text())
    report = metrics[args.section]
    names = list(report["per_class"])
    result = split_accuracy(report, names, shared_class_ids(load_concept_map(args.map), args.dataset))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
