"""The k-shot protocol: K training images per class, drawn after the duplicate-aware split.

Two samplers (``data.shot_sampler``):

- ``clipft`` (default): K *distinct* images per class. "Distinct" follows the dedupe groups: pixel
  copies (``data.dedupe=group``) or a source's own groups (GTSRB tracks) count once, so a 4-shot class
  never holds the same photo twice. Only the training split shrinks; val and test are the full-data
  run's, so k-shot and full-data numbers compare directly. Classes with fewer than K distinct images
  keep all they have, and are reported.
- ``coop``: the field's protocol, CoOp's sampler exactly: Dassl's ``DatasetBase.generate_fewshot_dataset``
  (KaiyangZhou/Dassl.pytorch @ c61a1b5, ``dassl/data/datasets/base_dataset.py:167-209``, with
  ``split_dataset_by_label`` at ``:211-223``) as the CoOp datasets call it (KaiyangZhou/CoOp @ ff61507,
  ``datasets/oxford_pets.py:44-45``, the same in every ``datasets/*.py``): Python's ``random`` seeded with
  the run's seed (``dassl/utils/tools.py:73-77``, ``train.py:132``), the items grouped by label in order of
  first appearance, ``random.sample(items, K)`` per label, train first, then val with ``min(K, 4)`` from the
  same stream. A label with fewer than K items keeps them all in order (``repeat=False``, Dassl's default
  since e3a15da; ``repeat=True`` draws ``random.choices(items, k=K)``, the older default).

The chosen split can be written as JSON (:func:`split_record`, the run's ``fewshot_split.json``) and
given back (:func:`split_from_record`, ``data.fewshot_split_file``), so a K-shot split is identical
across methods and machines. Paths are stored relative to the dataset's common folder.
"""

from __future__ import annotations

import os
import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipft.data.samples import Sample
from clipft.errors import ConfigError, DataError

SHOT_SAMPLERS = ("clipft", "coop")
COOP_VAL_SHOTS = 4  # CoOp's datasets/*.py: val = min(num_shots, 4) per class


@dataclass
class FewShotSelection:
    indices: list[int]
    report: dict[str, Any] = field(default_factory=dict)


def select_shots(
    labels: Sequence[int],
    shots: int,
    seed: int,
    groups: Sequence[Hashable] | None = None,
    class_names: Sequence[str] | None = None,
) -> FewShotSelection:
    """Indices of ``shots`` distinct-group samples per class (one sample per group), seeded."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(f"data.shots must be an integer >= 1 or null (all training images), got {shots!r}")
    by_class: dict[int, dict[Hashable, int]] = {}
    for i, label in enumerate(labels):
        key = groups[i] if groups is not None else ("sample", i)
        by_class.setdefault(int(label), {}).setdefault(key, i)  # one representative per group
    rng = random.Random(int(seed))
    chosen: list[int] = []
    short: dict[str, int] = {}
    for label in sorted(by_class):
        representatives = sorted(by_class[label].values())
        rng.shuffle(representatives)
        chosen.extend(sorted(representatives[:shots]))
        if len(representatives) < shots:
            name = class_names[label] if class_names is not None else str(label)
            short[name] = len(representatives)
    report = {"shots": shots, "seed": int(seed), "train_images": len(chosen), "classes_with_fewer_images": short}
    return FewShotSelection(sorted(chosen), report)


def dassl_fewshot(labels: Sequence[int], shots: int, rng: random.Random, repeat: bool = False) -> list[int]:
    """Indices Dassl's ``generate_fewshot_dataset`` keeps of a list with these ``labels``, in its order.

    Labels in order of first appearance, each label's items in list order; ``rng.sample(items, shots)``
    (``rng.choices`` with ``repeat`` when a label has fewer, else all of them). ``random.sample`` depends
    only on the population's length, so sampling indices draws exactly what sampling the items draws.
    """
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(i)
    chosen: list[int] = []
    for items in by_label.values():
        if len(items) >= shots:
            chosen.extend(rng.sample(items, shots))
        elif repeat:
            chosen.extend(rng.choices(items, k=shots))
        else:
            chosen.extend(items)
    return chosen


@dataclass
class FewShotSplit:
    """A K-shot train / val split in the index's labels (before any ``data.classes`` subset)."""

    train: list[Sample]
    val: list[Sample]
    seed: int
    shots: int
    sampler: str
    report: dict[str, Any] = field(default_factory=dict)


def coop_shots(train: Sequence[Sample], val: Sequence[Sample], shots: int, seed: int, class_names: Sequence[str] | None = None) -> FewShotSplit:
    """CoOp's split: K per class of ``train``, then ``min(K, 4)`` per class of ``val``, one seeded stream."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(f"data.shots must be an integer >= 1 or null (all training images), got {shots!r}")
    rng = random.Random(int(seed))
    train_idx = dassl_fewshot([s.label for s in train], shots, rng)
    val_idx = dassl_fewshot([s.label for s in val], min(shots, COOP_VAL_SHOTS), rng)
    picked = FewShotSplit([train[i] for i in train_idx], [val[i] for i in val_idx], int(seed), shots, "coop")
    picked.report = shot_report(picked, [s.label for s in train], class_names)
    return picked


def shot_report(split: FewShotSplit, pool_labels: Sequence[int], class_names: Sequence[str] | None) -> dict[str, Any]:
    """``data_report.json``'s ``few_shot`` block: sampler, K, seed, sizes and the classes short of K."""
    counts: dict[int, int] = {}
    for label in pool_labels:
        counts[int(label)] = counts.get(int(label), 0) + 1
    short = {(class_names[c] if class_names is not None else str(c)): n for c, n in sorted(counts.items()) if n < split.shots}
    return {
        "sampler": split.sampler, "shots": split.shots, "seed": split.seed, "train_images": len(split.train),
        "val_images": len(split.val), "classes_with_fewer_images": short,
    }


def dataset_root(samples: Sequence[Sample]) -> str:
    """The folder every sample lies under: what :func:`split_record` stores paths relative to."""
    dirs = [os.path.dirname(os.path.abspath(s.path)) for s in samples]
    return os.path.commonpath(dirs) if dirs else ""


def split_record(split: FewShotSplit, root: str) -> dict[str, Any]:
    """``fewshot_split.json``: ``{"train": [[path, label], ...], "val": [...], "seed", "shots", "sampler", "root"}``."""

    def rows(samples: Sequence[Sample]) -> list[list[Any]]:
        return [[os.path.relpath(os.path.abspath(s.path), root).replace(os.sep, "/"), int(s.label)] for s in samples]

    return {"train": rows(split.train), "val": rows(split.val), "seed": split.seed, "shots": split.shots,
            "sampler": split.sampler, "root": root}


def split_from_record(record: Mapping[str, Any], source: str, root: str) -> FewShotSplit:
    """The split a ``fewshot_split.json`` holds, its paths resolved against ``root``; DataError if malformed."""

    def samples(key: str) -> list[Sample]:
        rows = record.get(key)
        if not isinstance(rows, list):
            raise DataError(f"data.fewshot_split_file={source!r}: {key!r} must be a list of [path, label] pairs")
        out = []
        for row in rows:
            ok = isinstance(row, list) and len(row) == 2 and isinstance(row[0], str) and isinstance(row[1], int)
            if not ok or isinstance(row[1], bool) or os.path.isabs(row[0]) or ".." in row[0].split("/"):
                raise DataError(
                    f"data.fewshot_split_file={source!r}: {key} entry {row!r} is not [relative path, integer label]; "
                    "write the file with a clipft run (its fewshot_split.json)"
                )
            out.append(Sample(os.path.join(root, *row[0].split("/")), row[1]))
        return out

    shots, seed = record.get("shots"), record.get("seed")
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1 or not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"data.fewshot_split_file={source!r}: 'shots' (>= 1) and 'seed' must be integers")
    sampler = str(record.get("sampler", "coop"))
    return FewShotSplit(samples("train"), samples("val"), seed, shots, sampler)
