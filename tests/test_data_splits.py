"""Split guarantees: copies never straddle splits, every class keeps a floor, seeds reproduce, dedupe modes."""

from __future__ import annotations

from collections import defaultdict

import pytest

from clipft.data.base import Sample
from clipft.data.dedupe import apply_dedupe
from clipft.data.splits import stratified_group_split


def grouped_labels():
    """3 classes: class 0 has 10 photos x 2 copies, class 1 has 3 photos x 3 copies, class 2 one photo x 2 copies."""
    labels, groups = [], []
    for label, photos, copies in ((0, 10, 2), (1, 3, 3), (2, 1, 2)):
        for p in range(photos):
            for _ in range(copies):
                labels.append(label)
                groups.append(f"{label}-{p}")
    return labels, groups


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_group_split_keeps_copies_together_and_floors_each_class(seed):
    labels, groups = grouped_labels()
    split = stratified_group_split(labels, 0.3, seed, groups)
    assert sorted(split.train + split.held_out) == list(range(len(labels)))
    train_groups = {groups[i] for i in split.train}
    held_groups = {groups[i] for i in split.held_out}
    assert not train_groups & held_groups
    held_by_class = defaultdict(int)
    for i in split.held_out:
        held_by_class[labels[i]] += 1
    train_classes = {labels[i] for i in split.train}
    assert train_classes == {0, 1, 2}  # the single-photo class stays in train
    assert held_by_class[0] == 3 * 2  # round(0.3 * 10 photos) = 3 photos, 2 copies each
    assert held_by_class[1] == 1 * 3  # round(0.9) = 1 photo, floor of one
    assert held_by_class[2] == 0
    assert split.unsplittable_classes == [2]


def test_split_is_seeded():
    labels, groups = grouped_labels()
    a = stratified_group_split(labels, 0.3, 5, groups)
    b = stratified_group_split(labels, 0.3, 5, groups)
    c = stratified_group_split(labels, 0.3, 6, groups)
    assert a.held_out == b.held_out
    assert a.held_out != c.held_out


def test_ungrouped_split_lets_copies_leak():
    """Without groups (dedupe=none) copies land on both sides: the seed-notebook split."""
    labels, groups = grouped_labels()
    split = stratified_group_split(labels, 0.3, 0, None)
    assert {groups[i] for i in split.train} & {groups[i] for i in split.held_out}


def test_two_group_class_gets_one_in_each_split():
    split = stratified_group_split([0, 0, 1, 1, 1, 1], 0.1, 0, ["a", "b", "c", "d", "e", "f"])
    assert sum(1 for i in split.held_out if i < 2) == 1
    assert sum(1 for i in split.train if i < 2) == 1


def samples_and_keys():
    pool = [Sample(f"/d/{n}.png", label) for n, label in (("a", 0), ("a1", 0), ("b", 0), ("c", 1), ("c1", 1))]
    keys = {"/d/a.png": "A", "/d/a1.png": "A", "/d/b.png": "B", "/d/c.png": "C", "/d/c1.png": "C"}
    test = [Sample("/t/x.png", 0), Sample("/t/y.png", 1), Sample("/t/y1.png", 1)]
    keys.update({"/t/x.png": "A", "/t/y.png": "Y", "/t/y1.png": "Y"})
    return pool, test, keys


def test_dedupe_modes_and_test_overlap():
    pool, test, keys = samples_and_keys()
    key = lambda s: keys[s.path]  # noqa: E731
    grouped = apply_dedupe(pool, test, key, "group", "clean")
    assert len(grouped.pool) == 5 and grouped.groups == ["A", "A", "B", "C", "C"]
    assert grouped.report["pool_duplicate_files"] == 2 and grouped.report["pool_distinct"] == 3
    assert grouped.report["test_overlap_files"] == 1
    assert [s.path for s in grouped.test] == ["/t/y.png", "/t/y1.png"]  # clean: the leaked x.png is out

    dropped = apply_dedupe(pool, test, key, "drop", "all")
    assert [s.path for s in dropped.pool] == ["/d/a.png", "/d/b.png", "/d/c.png"]
    assert dropped.groups is None
    assert [s.path for s in dropped.test] == ["/t/x.png", "/t/y.png"]  # all: leak kept; copy y1 dropped

    none = apply_dedupe(pool, test, key, "none", "all")
    assert len(none.pool) == 5 and none.groups is None and len(none.test) == 3
    assert none.report["pool_duplicate_files"] == 2  # still counted and reported


def test_conflicting_labels_on_identical_pixels_are_counted():
    pool = [Sample("/a.png", 0), Sample("/b.png", 1)]
    result = apply_dedupe(pool, None, lambda s: "same", "group")
    assert result.report["label_conflicts"] == 1


def test_shots_take_k_distinct_groups_per_class_seeded():
    from clipft.data.few_shot import select_shots

    labels = [0] * 6 + [1] * 6 + [2] * 2
    groups = ["a", "a", "b", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "k"]  # class 0: 4 groups, class 2: 1
    picked = select_shots(labels, 3, seed=0, groups=groups, class_names=["x", "y", "z"])
    chosen = [(labels[i], groups[i]) for i in picked.indices]
    per_class = defaultdict(list)
    for label, group in chosen:
        per_class[label].append(group)
    assert {k: len(v) for k, v in per_class.items()} == {0: 3, 1: 3, 2: 1}
    assert all(len(set(v)) == len(v) for v in per_class.values())  # a copy never counts twice
    assert picked.report["classes_with_fewer_images"] == {"z": 1}
    assert select_shots(labels, 3, seed=0, groups=groups).indices == picked.indices
    assert any(select_shots(labels, 3, seed=s, groups=groups).indices != picked.indices for s in range(1, 6))
    with pytest.raises(Exception, match="data.shots"):
        select_shots(labels, 0, seed=0)


def test_datamodule_shots_shrink_only_train(synthetic_root):
    from clipft.data import SyntheticSignsDataModule

    def build(**kw):
        dm = SyntheticSignsDataModule(root=str(synthetic_root), train_per_class=24, test_per_class=6, **kw)
        dm.setup()
        return dm

    full, few = build(), build(shots=2, shot_seed=1)
    assert few.split_report["few_shot"]["shots"] == 2
    assert sorted(few.split_report["train_class_counts"]) == [2] * 10
    assert {s.path for s in few.train_samples} <= {s.path for s in full.train_samples}
    assert [s.path for s in few.val_samples] == [s.path for s in full.val_samples]
    assert [s.path for s in few.test_samples] == [s.path for s in full.test_samples]
