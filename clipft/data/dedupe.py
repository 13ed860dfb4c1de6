"""Duplicate handling: which samples are copies of each other, and what a split does with them.

``data.dedupe`` picks the policy for the pool train/val (and a carved test) are drawn from:

* ``none``  - every file is its own sample (a random split leaks copies across splits);
* ``drop``  - keep the first copy (sorted by path) of each distinct image, in the pool and in the test list;
* ``group`` - keep every file, but copies always land in the same split (the default).

Independently of the policy, test images whose pixels also occur in the pool are the
train/test overlap; ``data.test_view=clean`` leaves them out of the test split, ``all`` keeps them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEDUPE_MODES = ("none", "drop", "group")
TEST_VIEWS = ("clean", "all")
REPORT_EXAMPLES = 20  # file names listed in reports per category


@dataclass
class DedupeResult:
    """The pool and test lists after the policy, the split groups, and what was found."""

    pool: list[Any]
    groups: list[str] | None  # one group key per pool sample, for stratified_group_split
    test: list[Any] | None
    report: dict[str, Any] = field(default_factory=dict)


def find_copies(keys: Sequence[str]) -> dict[str, list[int]]:
    """``key -> indices`` for every key that occurs more than once."""
    positions: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        positions[key].append(i)
    return {k: v for k, v in positions.items() if len(v) > 1}


def apply_dedupe(
    pool: Sequence[Any],
    test: Sequence[Any] | None,
    key_of: Callable[[Any], str],
    mode: str = "group",
    test_view: str = "clean",
) -> DedupeResult:
    """Apply ``mode`` to ``pool`` (and ``test``) given ``key_of(sample)`` (the pixel hash)."""
    pool = list(pool)
    pool_keys = [key_of(s) for s in pool]
    copies = find_copies(pool_keys)
    conflicts = [
        sorted({pool[i].label for i in idx}) for idx in copies.values() if len({pool[i].label for i in idx}) > 1
    ]
    report: dict[str, Any] = {
        "mode": mode,
        "test_view": test_view,
        "pool_files": len(pool),
        "pool_distinct": len(set(pool_keys)),
        "pool_duplicate_files": len(pool) - len(set(pool_keys)),
        "pool_groups_with_copies": len(copies),
        "label_conflicts": len(conflicts),
        "examples": [[str(pool[i].path) for i in idx] for idx in list(copies.values())[:REPORT_EXAMPLES]],
    }
    groups: list[str] | None = None
    if mode == "drop":
        keep = _first_of_each(pool, pool_keys)
        pool = [pool[i] for i in keep]
        pool_keys = [pool_keys[i] for i in keep]
    elif mode == "group":
        groups = pool_keys
    report["pool_after"] = len(pool)

    if test is not None:
        test = list(test)
        test_keys = [key_of(s) for s in test]
        pool_set = set(pool_keys)
        overlap = [i for i, k in enumerate(test_keys) if k in pool_set]
        report["test_files"] = len(test)
        report["test_duplicate_files"] = len(test) - len(set(test_keys))
        report["test_overlap_files"] = len(overlap)
        report["test_overlap_distinct"] = len({test_keys[i] for i in overlap})
        report["test_overlap_examples"] = [str(test[i].path) for i in overlap[:REPORT_EXAMPLES]]
        if test_view == "clean":
            dropped = set(overlap)
            test_keys = [k for i, k in enumerate(test_keys) if i not in dropped]
            test = [s for i, s in enumerate(test) if i not in dropped]
        if mode == "drop":
            keep = _first_of_each(test, test_keys)
            test = [test[i] for i in keep]
        report["test_after"] = len(test)
    return DedupeResult(pool=pool, groups=groups, test=test, report=report)


def _first_of_each(samples: Sequence[Any], keys: Sequence[str]) -> list[int]:
    """Indices keeping the first sample (by path) of each key, in the original order."""
    first: dict[str, int] = {}
    for i in sorted(range(len(samples)), key=lambda i: str(samples[i].path)):
        first.setdefault(keys[i], i)
    return sorted(first.values())
