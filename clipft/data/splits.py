"""Seeded, stratified, group-aware splits.

Samples in the same group (e.g. pixel-identical copies) always land in the same split, so a
duplicate can never sit in both train and validation. Each class keeps at least one group in
train, and at least one in the held-out split when it has two or more groups.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SplitResult:
    train: list[int]
    held_out: list[int]
    unsplittable_classes: list[int] = field(default_factory=list)  # classes with a single group


def stratified_group_split(
    labels: Sequence[int],
    fraction: float,
    seed: int,
    groups: Sequence[Hashable] | None = None,
) -> SplitResult:
    """Split indices into (train, held_out) with ``fraction`` of each class's groups held out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    labels = list(labels)
    groups = list(groups) if groups is not None else list(range(len(labels)))
    rng = np.random.default_rng(seed)
    by_class: dict[int, dict[Hashable, list[int]]] = defaultdict(lambda: defaultdict(list))
    for idx, (label, group) in enumerate(zip(labels, groups)):
        by_class[label][group].append(idx)
    train: list[int] = []
    held: list[int] = []
    unsplittable: list[int] = []
    for label in sorted(by_class):
        class_groups = list(by_class[label].values())
        order = rng.permutation(len(class_groups))
        n = len(class_groups)
        n_held = int(round(fraction * n))
        if fraction > 0 and n >= 2:
            n_held = min(max(n_held, 1), n - 1)
        elif n < 2:
            n_held = 0
            if fraction > 0:
                unsplittable.append(label)
        for rank, g in enumerate(order):
            (held if rank < n_held else train).extend(class_groups[g])
    return SplitResult(sorted(train), sorted(held), unsplittable)


def merge_groups(*keyings: Sequence[Hashable] | None) -> list[int] | None:
    """One group id per sample such that samples sharing a key in *any* keying share a group.

    E.g. GTSRB track ids and pixel-copy hashes: a copy of a frame drags its whole track along.
    ``None`` keyings are skipped; with none left, ``None`` (every sample its own group).
    """
    given = [list(k) for k in keyings if k is not None]
    if not given:
        return None
    n = len(given[0])
    if any(len(k) != n for k in given):
        raise ValueError("every keying needs one key per sample")
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in given:
        first: dict[Hashable, int] = {}
        for i, key in enumerate(keys):
            j = first.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(n)]
