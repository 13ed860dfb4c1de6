"""From a dataset index and a split policy to the train / val / test splits: a pure function.

:func:`make_splits` reads no file. What it needs to know about the images, the pixel hash of
each path (``None``: the file cannot be decoded), the datamodule computes and passes in as
``keys``; everything else is data: the :class:`~clipft.data.samples.DatasetIndex` (with its own
``pool_groups``, e.g. GTSRB tracks) and the :class:`SplitPolicy`. In order:

1. with ``keys`` (the policy :meth:`~SplitPolicy.needs_scan`): unreadable files are left out, then
   ``dedupe`` / ``test_view`` apply (:mod:`clipft.data.dedupe`);
2. the pixel-copy groups merge with the index's ``pool_groups``;
3. a test split is carved from the pool when the index has none (``test_fraction``, ``seed + 1``),
   then val is held out (``val_fraction``, ``seed``) unless the index gives one; both stratified and
   group-aware (:mod:`clipft.data.splits`);
4. ``shots`` (:mod:`clipft.data.few_shot`): ``shot_sampler=clipft``: only train shrinks, K distinct
   groups per class; ``coop``: CoOp's sampler, K per class of train then ``min(K, 4)`` of val. A split
   given as data (``given``: a run's ``fewshot_split.json``) replaces the draw, checked against the splits;
5. ``classes``: ``base`` / ``novel`` keep one half of the classes, relabelled from 0 (CoCoOp's
   ``subsample_classes``, KaiyangZhou/CoOp @ ff61507 ``datasets/oxford_pets.py:141-185``: the training
   labels sorted, ``m = ceil(n / 2)``, base the first ``m``, novel the rest), after the shots as there
   (``:44-52``); the other half's test split is kept aside (:attr:`Splits.held_out`);
6. with ``keys``: val/test files with a pixel copy in train are counted (the leak check).

The result carries the splits and the report (``data_report.json``'s split fields).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipft.data.dedupe import DEDUPE_MODES, TEST_VIEWS, apply_dedupe
from clipft.data.few_shot import SHOT_SAMPLERS, FewShotSplit, coop_shots, select_shots
from clipft.data.samples import DatasetIndex, Sample
from clipft.data.splits import merge_groups, stratified_group_split
from clipft.data.stats import class_balance
from clipft.errors import ConfigError

BAD_IMAGE_POLICIES = ("error", "skip")
CLASS_SUBSETS = ("all", "base", "novel")


def choice(key: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a ConfigError naming ``data.<key>``."""
    if value not in allowed:
        raise ConfigError(f"data.{key}={value!r} is not allowed; choose one of {list(allowed)}")
    return str(value)


@dataclass(frozen=True)
class SplitPolicy:
    """How splits are drawn (the ``data.*`` keys of the same names).

    ``shot_seed=None`` draws the shots with ``seed``. ``on_bad_image`` only decides whether the
    images must be scanned; raising on an unreadable file is the datamodule's job (it has the errors).
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    dedupe: str = "group"
    test_view: str = "clean"
    on_bad_image: str = "error"
    shots: int | None = None
    shot_seed: int | None = None
    shot_sampler: str = "clipft"
    classes: str = "all"

    def __post_init__(self) -> None:
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"data.{key}={value!r} is not allowed: expected a number in [0, 1)")
        choice("dedupe", self.dedupe, DEDUPE_MODES)
        choice("test_view", self.test_view, TEST_VIEWS)
        choice("on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES)
        choice("shot_sampler", self.shot_sampler, SHOT_SAMPLERS)
        choice("classes", self.classes, CLASS_SUBSETS)
        shots = self.shots
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
            raise ConfigError(f"data.shots must be an integer >= 1 or null (all training images), got {shots!r}")

    def needs_scan(self, has_test: bool) -> bool:
        """Whether pixel hashes are needed: dedupe, skipping bad files or the clean test view's leak check."""
        return self.dedupe != "none" or self.on_bad_image == "skip" or (has_test and self.test_view == "clean")


@dataclass
class ClassSet:
    """A set of classes scored apart from the run's own: their names (label order) and test samples."""

    name: str
    class_names: list[str]
    test: list[Sample]


@dataclass
class Splits:
    """The three sample lists, the classes they are labelled with, and the report fields they imply.

    ``class_names``: the run's classes (``None``: the index's); ``held_out``: with ``classes=base|novel``,
    the other half (its test split); ``few_shot``: the K-shot split drawn or given, in the index's labels.
    """

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    report: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    held_out: ClassSet | None = None
    few_shot: FewShotSplit | None = None


def make_splits(
    index: DatasetIndex,
    policy: SplitPolicy,
    keys: Mapping[str, str | None] | None = None,
    given: FewShotSplit | None = None,
) -> Splits:
    """The splits ``policy`` draws from ``index``, given ``keys``: path -> pixel hash (``None``: unreadable).

    ``keys`` must cover every path of the index when ``policy.needs_scan(index.test is not None)``;
    otherwise they are not used (no duplicate handling, no leak check), as without a scan.
    ``given``: a K-shot split to use instead of drawing one (checked: its samples lie in train/val).
    """
    if not index.train_pool:
        raise ValueError("the index has no training samples")
    pool, val, test = list(index.train_pool), index.val, index.test
    source_group = dict(zip(index.train_pool, index.pool_groups, strict=True)) if index.pool_groups is not None else None
    duplicates: dict[str, Any] = {"mode": policy.dedupe, "checked": False}
    groups: list[Any] | None = None
    skipped = 0
    if policy.needs_scan(test is not None):
        if keys is None:
            raise ValueError(f"{policy} needs the pixel hash of every image (keys)")
        skipped = len({s.path for s in [*pool, *(val or []), *(test or [])] if keys[s.path] is None})
        pool, val, test, groups, duplicates = _deduplicate(pool, val, test, keys, policy)
    if source_group is not None:
        groups = merge_groups([source_group[s] for s in pool], groups)
    train, val, test, train_groups, unsplittable = _hold_out(pool, val, test, groups, policy)
    few_shot = _shots(index, policy, train, val, test, train_groups, given)
    if few_shot is not None:
        train, val = list(few_shot.train), list(few_shot.val)
    names, train, val, test, held_out = class_subset(index.class_names, train, val, test, policy.classes)
    if duplicates["checked"]:
        assert keys is not None
        train_keys = {keys[s.path] for s in train}
        for split, samples in (("val", val), ("test", test)):
            duplicates[f"{split}_files_with_copy_in_train"] = sum(keys[s.path] in train_keys for s in samples)
    unsplittable_names = [index.class_names[c] for c in sorted(unsplittable)]  # in the index's labels
    report = split_report(names, train, val, test, unsplittable_names, duplicates, skipped)
    if few_shot is not None:
        report["few_shot"] = few_shot.report
    if held_out is not None:
        report["classes"] = {"subset": policy.classes, "names": names, "held_out": held_out.name,
                             "held_out_names": held_out.class_names, "held_out_test": len(held_out.test)}
    return Splits(train, val, test, report, names, held_out, few_shot)


def _shots(
    index: DatasetIndex,
    policy: SplitPolicy,
    train: list[Sample],
    val: list[Sample],
    test: list[Sample],
    train_groups: list[Hashable] | None,
    given: FewShotSplit | None,
) -> FewShotSplit | None:
    """The K-shot split: ``given`` (checked), CoOp's draw, or clipft's (only train shrinks); None without shots."""
    if given is not None:
        return check_given_shots(given, policy, train, val, test)
    if policy.shots is None:
        return None
    seed = policy.shot_seed if policy.shot_seed is not None else policy.seed
    if policy.shot_sampler == "coop":
        return coop_shots(train, val, policy.shots, seed, index.class_names)
    selection = select_shots([s.label for s in train], policy.shots, seed, train_groups, index.class_names)
    return FewShotSplit([train[i] for i in selection.indices], list(val), int(seed), policy.shots, "clipft", selection.report)


def check_given_shots(given: FewShotSplit, policy: SplitPolicy, train: list[Sample], val: list[Sample], test: list[Sample]) -> FewShotSplit:
    """``given`` if its K agrees with ``data.shots`` and every sample is a train/val sample of the same label."""
    if policy.shots is not None and policy.shots != given.shots:
        raise ConfigError(
            f"data.shots={policy.shots} but data.fewshot_split_file holds a {given.shots}-shot split; "
            f"set data.shots={given.shots} (or null) or give the {policy.shots}-shot file"
        )
    known = {os.path.abspath(s.path): s for s in (*train, *val)}  # the index's own samples, by absolute path
    in_test = {os.path.abspath(s.path) for s in test}

    def resolve(sample: Sample) -> Sample:
        path = os.path.abspath(sample.path)
        found = known.get(path)
        if found is None or found.label != sample.label:
            where = "a test image" if path in in_test else (
                f"labelled {found.label} here" if found is not None else "not in this dataset's train/val splits")
            raise ConfigError(
                f"data.fewshot_split_file: {sample.path!r} (label {sample.label}) is {where}; the file was written "
                "for other data or other split settings (data.root, data.seed, data.dedupe): rewrite it with this data"
            )
        return found

    picked_train, picked_val = [resolve(s) for s in given.train], [resolve(s) for s in given.val]
    report = {"sampler": given.sampler, "shots": given.shots, "seed": given.seed, "train_images": len(given.train),
              "val_images": len(given.val), "given": True}
    return FewShotSplit(picked_train, picked_val, given.seed, given.shots, given.sampler, report)


def class_subset(
    names: Sequence[str], train: list[Sample], val: list[Sample], test: list[Sample], classes: str
) -> tuple[list[str], list[Sample], list[Sample], list[Sample], ClassSet | None]:
    """CoCoOp's ``subsample_classes``: base = the first ``ceil(n / 2)`` training labels, novel the rest, relabelled
    from 0; returns the run's names and splits, and the other half as a :class:`ClassSet` (None for ``all``)."""
    if classes == "all":
        return list(names), train, val, test, None
    labels = sorted({s.label for s in train})
    half = math.ceil(len(labels) / 2)
    base, novel = labels[:half], labels[half:]
    if not novel:
        raise ConfigError(f"data.classes={classes}: the training split has {len(labels)} class(es), too few to split into base and novel")
    selected, other = (base, novel) if classes == "base" else (novel, base)

    def keep(samples: list[Sample], chosen: list[int]) -> list[Sample]:
        relabel = {old: new for new, old in enumerate(chosen)}
        return [Sample(s.path, relabel[s.label]) for s in samples if s.label in relabel]

    held_out = ClassSet("novel" if classes == "base" else "base", [names[c] for c in other], keep(test, other))
    return [names[c] for c in selected], keep(train, selected), keep(val, selected), keep(test, selected), held_out


def _deduplicate(
    pool: list[Sample],
    val: list[Sample] | None,
    test: list[Sample] | None,
    keys: Mapping[str, str | None],
    policy: SplitPolicy,
) -> tuple[list[Sample], list[Sample] | None, list[Sample] | None, list[str] | None, dict[str, Any]]:
    """Unreadable files left out, then ``policy.dedupe`` / ``test_view`` applied; the pixel-copy groups and report."""
    pool, val, test = ([s for s in x if keys[s.path] is not None] if x is not None else None for x in (pool, val, test))
    if not pool:
        raise ValueError("every training sample is unreadable")
    result = apply_dedupe(pool, test, lambda s: keys[s.path], policy.dedupe, policy.test_view)
    return result.pool, val, result.test, result.groups, {**result.report, "checked": True}


def _hold_out(
    pool: list[Sample],
    val: list[Sample] | None,
    test: list[Sample] | None,
    groups: Sequence[Hashable] | None,
    policy: SplitPolicy,
) -> tuple[list[Sample], list[Sample], list[Sample], list[Hashable] | None, set[int]]:
    """Test carved from the pool when not given (seed + 1), then val (seed): train, val, test, train groups, unsplittable."""
    unsplittable: set[int] = set()
    if test is None:
        split = stratified_group_split([s.label for s in pool], policy.test_fraction, policy.seed + 1, groups)
        test = [pool[i] for i in split.held_out]
        groups = [groups[i] for i in split.train] if groups is not None else None
        pool = [pool[i] for i in split.train]
        unsplittable.update(split.unsplittable_classes)
    train_groups = list(groups) if groups is not None else None
    if val is not None:
        return pool, list(val), list(test), train_groups, unsplittable
    split = stratified_group_split([s.label for s in pool], policy.val_fraction, policy.seed, groups)
    train_groups = [groups[i] for i in split.train] if groups is not None else None
    unsplittable.update(split.unsplittable_classes)
    return [pool[i] for i in split.train], [pool[i] for i in split.held_out], list(test), train_groups, unsplittable


def split_report(
    names: Sequence[str],
    train: Sequence[Sample],
    val: Sequence[Sample],
    test: Sequence[Sample],
    unsplittable: Sequence[str],
    duplicates: dict[str, Any],
    skipped: int,
) -> dict[str, Any]:
    """``data_report.json``'s split fields (sizes, per-class counts, balance, duplicates)."""
    balance = class_balance([s.label for s in train], names)
    return {
        "num_classes": len(names),
        "train": len(train),
        "val": len(val),
        "test": len(test),
        "train_class_counts": _counts(train, len(names)),
        "val_class_counts": _counts(val, len(names)),
        "test_class_counts": _counts(test, len(names)),
        "class_balance": {k: v for k, v in balance.items() if k != "counts"},
        "unsplittable_classes": list(unsplittable),
        "duplicates": duplicates,
        "skipped_images": skipped,
    }


def _counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    counter = Counter(s.label for s in samples)
    return [counter.get(c, 0) for c in range(num_classes)]
