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
4. ``shots``: only train shrinks, K distinct groups per class (:mod:`clipft.data.few_shot`);
5. with ``keys``: val/test files with a pixel copy in train are counted (the leak check).

The result carries the splits and the report (``data_report.json``'s split fields).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipft.data.dedupe import DEDUPE_MODES, TEST_VIEWS, apply_dedupe
from clipft.data.few_shot import select_shots
from clipft.data.samples import DatasetIndex, Sample
from clipft.data.splits import merge_groups, stratified_group_split
from clipft.data.stats import class_balance
from clipft.errors import ConfigError

BAD_IMAGE_POLICIES = ("error", "skip")


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

    def __post_init__(self) -> None:
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 <= float(value) < 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1), got {value!r}")
        choice("dedupe", self.dedupe, DEDUPE_MODES)
        choice("test_view", self.test_view, TEST_VIEWS)
        choice("on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES)
        shots = self.shots
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
            raise ConfigError(f"data.shots must be an integer >= 1 or null (all training images), got {shots!r}")

    def needs_scan(self, has_test: bool) -> bool:
        """Whether pixel hashes are needed: dedupe, skipping bad files or the clean test view's leak check."""
        return self.dedupe != "none" or self.on_bad_image == "skip" or (has_test and self.test_view == "clean")


@dataclass
class Splits:
    """The three sample lists and the report fields they imply."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    report: dict[str, Any] = field(default_factory=dict)


def make_splits(index: DatasetIndex, policy: SplitPolicy, keys: Mapping[str, str | None] | None = None) -> Splits:
    """The splits ``policy`` draws from ``index``, given ``keys``: path -> pixel hash (``None``: unreadable).

    ``keys`` must cover every path of the index when ``policy.needs_scan(index.test is not None)``;
    otherwise they are not used (no duplicate handling, no leak check), as without a scan.
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
    few_shot = None
    if policy.shots is not None:  # k-shot protocol: only train shrinks, after the duplicate-aware split
        shot_seed = policy.shot_seed if policy.shot_seed is not None else policy.seed
        selection = select_shots([s.label for s in train], policy.shots, shot_seed, train_groups, index.class_names)
        train = [train[i] for i in selection.indices]
        few_shot = selection.report
    if duplicates["checked"]:
        assert keys is not None
        train_keys = {keys[s.path] for s in train}
        for split, samples in (("val", val), ("test", test)):
            duplicates[f"{split}_files_with_copy_in_train"] = sum(keys[s.path] in train_keys for s in samples)
    report = split_report(index.class_names, train, val, test, sorted(unsplittable), duplicates, skipped)
    if few_shot is not None:
        report["few_shot"] = few_shot
    return Splits(train, val, test, report)


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
    unsplittable: Sequence[int],
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
        "unsplittable_classes": [names[c] for c in unsplittable],
        "duplicates": duplicates,
        "skipped_images": skipped,
    }


def _counts(samples: Sequence[Sample], num_classes: int) -> list[int]:
    counter = Counter(s.label for s in samples)
    return [counter.get(c, 0) for c in range(num_classes)]
