"""make_splits: index + SplitPolicy (+ pixel hashes as data) -> splits, without a file; and the snapshot it must keep.

The in-memory indexes give duplicate groups as data (``keys``: path -> pixel hash, ``None`` for an
unreadable file), as the datamodule's fingerprinting would. The snapshot digests were recorded
from the datamodule's ``setup`` before the split logic moved out of it (clipft/data/base.py):
the splits (and every report field) must stay exactly the same, since measured figures depend on them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from data_trees import make_gtsrb, make_traffic_signs

from clipft.data import GTSRBDataModule, TrafficSignsDataModule
from clipft.data.samples import DatasetIndex, Sample
from clipft.data.split_policy import SplitPolicy, Splits, make_splits
from clipft.errors import ConfigError

MODES, VIEWS = ("group", "drop", "none"), ("clean", "all")


# ---------------------------------------------------------------- in-memory indexes
def copies_index() -> tuple[DatasetIndex, dict[str, str | None]]:
    """5 classes with 8/6/4/2/1 photos, photo p saved 1 + p % 3 times; a cross-class copy, test leaks, 2 unreadable."""
    keys: dict[str, str | None] = {}
    pool: list[Sample] = []
    for c, photos in enumerate((8, 6, 4, 2, 1)):
        for p in range(photos):
            for k in range(1 + p % 3):
                path = f"/d/train/{c}/{p:02d}_{k}.png"
                pool.append(Sample(path, c))
                keys[path] = f"h{c}-{p}"
    pool.append(Sample("/d/train/1/conflict.png", 1))
    keys["/d/train/1/conflict.png"] = "h0-0"  # class 0's photo 0, labelled 1
    for path in ("/d/train/2/broken.png", "/d/test/broken.png"):
        keys[path] = None
    pool.append(Sample("/d/train/2/broken.png", 2))
    test = [Sample("/d/test/broken.png", 0)]
    for c in range(5):
        for name, key in ((f"{c}_leak", f"h{c}-0"), (f"{c}_new", f"t{c}"), (f"{c}_new_copy", f"t{c}"), (f"{c}_other", f"u{c}")):
            test.append(Sample(f"/d/test/{name}.png", c))
            keys[f"/d/test/{name}.png"] = key
    return DatasetIndex([f"class{c}" for c in range(5)], pool, test=test), keys


def tracks_index() -> tuple[DatasetIndex, dict[str, str | None]]:
    """GTSRB-like: 4 classes x 5 tracks x 3 frames (pool_groups), one frame copied into another track, no test."""
    keys: dict[str, str | None] = {}
    pool, groups = [], []
    for c in range(4):
        for t in range(5):
            for f in range(3):
                path = f"/g/{c:05d}/{t:05d}_{f:05d}.ppm"
                pool.append(Sample(path, c))
                groups.append(f"{c}/{t}")
                keys[path] = f"px{c}-{t}-{f}"
        keys[f"/g/{c:05d}/00004_00002.ppm"] = f"px{c}-0-0"  # track 4's last frame: a copy of track 0's first
    return DatasetIndex([f"sign{c}" for c in range(4)], pool, pool_groups=groups), keys


def given_val_index() -> tuple[DatasetIndex, dict[str, str | None]]:
    """A pool, a given val list (one of its files copies a pool photo) and a test list."""
    index, keys = copies_index()
    pool = [s for s in index.train_pool if not s.path.endswith("_0.png") or not s.path.split("/")[-1].startswith("03")]
    val = [s for s in index.train_pool if s not in pool]
    val.append(Sample("/d/val/copy.png", 0))
    keys["/d/val/copy.png"] = "h0-1"
    return DatasetIndex(index.class_names, pool, test=index.test, val=val), keys


INDEXES = {"copies": copies_index, "tracks": tracks_index, "given_val": given_val_index}


def outcome(splits: Splits) -> dict:
    return {
        "train": [(s.path, s.label) for s in splits.train],
        "val": [(s.path, s.label) for s in splits.val],
        "test": [(s.path, s.label) for s in splits.test],
        "report": splits.report,
    }


def digest(outcomes: list[dict]) -> str:
    return hashlib.sha256(json.dumps(outcomes, sort_keys=True).encode()).hexdigest()[:16]


def memory_policies(mode: str) -> list[SplitPolicy]:
    grid = itertools.product(VIEWS, (None, 1, 4), (0.1, 0.2))
    policies = [SplitPolicy(val_fraction=f, dedupe=mode, test_view=v, on_bad_image="skip", shots=s) for v, s, f in grid]
    return [*policies, SplitPolicy(seed=7, shot_seed=3, shots=2, dedupe=mode, on_bad_image="skip", test_fraction=0.3)]


# recorded from ImageClassificationDataModule.setup before the refactor (its _fingerprints fed these keys)
MEMORY_SNAPSHOT = {
    "copies/group": "1fe92bd607e4ecc6",
    "copies/drop": "af7519c13e580eb7",
    "copies/none": "b74311bc6375e493",
    "tracks/group": "416de2cd9f555887",
    "tracks/drop": "515109407056aa21",
    "tracks/none": "4adb667cdbdb8576",
    "given_val/group": "9810115056c6f48f",
    "given_val/drop": "d5cd063998b096f5",
    "given_val/none": "259ad2a9bad973ea",
}


@pytest.mark.parametrize("name,mode", list(itertools.product(INDEXES, MODES)))
def test_memory_splits_match_the_snapshot(name, mode):
    index, keys = INDEXES[name]()
    outcomes = [outcome(make_splits(index, policy, keys)) for policy in memory_policies(mode)]
    assert digest(outcomes) == MEMORY_SNAPSHOT[f"{name}/{mode}"]


# ---------------------------------------------------------------- properties, without files
def test_group_mode_keeps_copies_together_and_cleans_the_test_view():
    index, keys = copies_index()
    splits = make_splits(index, SplitPolicy(val_fraction=0.3, seed=1), keys)
    train_keys, val_keys = {keys[s.path] for s in splits.train}, {keys[s.path] for s in splits.val}
    assert not train_keys & val_keys
    assert not {keys[s.path] for s in splits.test} & (train_keys | val_keys)  # leaks left out
    dup = splits.report["duplicates"]
    assert dup["checked"] and dup["label_conflicts"] == 1
    assert dup["test_overlap_files"] == 5 and dup["test_after"] == 15
    assert dup["val_files_with_copy_in_train"] == 0 and dup["test_files_with_copy_in_train"] == 0
    assert splits.report["skipped_images"] == 2
    assert all(keys[s.path] is not None for s in [*splits.train, *splits.val, *splits.test])
    assert splits.report["unsplittable_classes"] == ["class4"]


def test_drop_mode_keeps_one_file_per_image_and_all_view_keeps_leaks():
    index, keys = copies_index()
    splits = make_splits(index, SplitPolicy(dedupe="drop", test_view="all", on_bad_image="skip"), keys)
    used = [keys[s.path] for s in [*splits.train, *splits.val]]
    assert len(used) == len(set(used))
    test_keys = [keys[s.path] for s in splits.test]
    assert len(test_keys) == len(set(test_keys)) and splits.report["duplicates"]["test_overlap_files"] == 5
    assert splits.report["duplicates"]["test_files_with_copy_in_train"] > 0


def test_none_mode_lets_copies_straddle_and_reports_it():
    index, keys = copies_index()
    splits = make_splits(index, SplitPolicy(dedupe="none", val_fraction=0.5, on_bad_image="skip"), keys)
    assert splits.report["duplicates"]["val_files_with_copy_in_train"] > 0


def test_source_groups_merge_with_pixel_copies_and_carve_a_test_split():
    index, keys = tracks_index()
    splits = make_splits(index, SplitPolicy(val_fraction=0.25, test_fraction=0.25), keys)
    track_of = dict(zip(index.train_pool, index.pool_groups))
    sides = [{track_of[s] for s in split} for split in (splits.train, splits.val, splits.test)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    # track 4 holds a copy of track 0's frame: the two tracks always share a split
    for c in range(4):
        assert [f"{c}/0" in side for side in sides] == [f"{c}/4" in side for side in sides]


def test_shots_count_distinct_groups_and_leave_val_and_test_alone():
    index, keys = copies_index()
    full = make_splits(index, SplitPolicy(), keys)
    shot = make_splits(index, SplitPolicy(shots=2, shot_seed=5), keys)
    assert (shot.val, shot.test) == (full.val, full.test)
    assert set(shot.train) <= set(full.train)
    per_class = Counter(s.label for s in shot.train)
    assert all(n <= 2 for n in per_class.values())
    assert len({keys[s.path] for s in shot.train}) == len(shot.train)  # no photo twice
    assert shot.report["few_shot"]["shots"] == 2 and shot.report["few_shot"]["seed"] == 5
    assert make_splits(index, SplitPolicy(shots=2), keys).report["few_shot"]["seed"] == 42  # shot_seed=None: seed


def test_given_val_is_used_as_is():
    index, keys = given_val_index()
    splits = make_splits(index, SplitPolicy(on_bad_image="skip"), keys)
    assert splits.val == [s for s in index.val if keys[s.path] is not None]
    assert splits.report["duplicates"]["val_files_with_copy_in_train"] == 1


def test_seeded_and_pure():
    index, keys = copies_index()
    before = (list(index.train_pool), list(index.test), dict(keys))
    a, b = make_splits(index, SplitPolicy(seed=3), keys), make_splits(index, SplitPolicy(seed=3), keys)
    assert outcome(a) == outcome(b)
    assert outcome(a) != outcome(make_splits(index, SplitPolicy(seed=4), keys))
    assert (index.train_pool, index.test, keys) == before


def test_keys_are_needed_only_when_the_policy_scans():
    index, keys = copies_index()
    no_scan = SplitPolicy(dedupe="none", test_view="all")
    assert not no_scan.needs_scan(has_test=True)
    assert SplitPolicy(dedupe="none", test_view="clean").needs_scan(has_test=True)
    assert not SplitPolicy(dedupe="none", test_view="clean").needs_scan(has_test=False)
    assert SplitPolicy(dedupe="none", test_view="all", on_bad_image="skip").needs_scan(has_test=False)
    clean = {p: k for p, k in keys.items() if k is not None}
    index = DatasetIndex(index.class_names, [s for s in index.train_pool if s.path in clean],
                         test=[s for s in index.test if s.path in clean])
    unscanned = make_splits(index, no_scan)
    assert unscanned.report["duplicates"] == {"mode": "none", "checked": False}
    assert outcome(make_splits(index, no_scan, clean)) == outcome(unscanned)  # keys ignored without a scan
    with pytest.raises(ValueError, match="pixel hash"):
        make_splits(index, SplitPolicy())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"val_fraction": 1.0}, r"data.val_fraction=1.0 is not allowed: expected a number in \[0, 1\)"),
        ({"test_fraction": -0.1}, r"data.test_fraction=-0.1 is not allowed: expected a number in \[0, 1\)"),
        ({"dedupe": "x"}, "data.dedupe='x' is not allowed"),
        ({"test_view": "x"}, "data.test_view='x'"),
        ({"on_bad_image": "x"}, "data.on_bad_image='x'"),
        ({"shots": 0}, "data.shots must be an integer"),
        ({"shots": True}, "data.shots must be an integer"),
    ],
)
def test_policy_checks_its_fields(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SplitPolicy(**kwargs)


def test_policy_is_frozen():
    with pytest.raises(AttributeError):
        SplitPolicy().seed = 1  # type: ignore[misc]


# ---------------------------------------------------------------- the datamodules on file trees
def relative(value, root: str):
    if isinstance(value, str):
        return value.replace(root, "<R>")
    if isinstance(value, list | tuple):
        return [relative(v, root) for v in value]
    if isinstance(value, dict):
        return {k: relative(v, root) for k, v in value.items()}
    return value


# recorded from ImageClassificationDataModule.setup before the refactor, on the same trees
TREE_SNAPSHOT = {
    "ts/group": "3fac9ab6d20394f6",
    "ts/drop": "306ce7e1f7d597c5",
    "ts/none": "192d7e39a15acdff",
    "ts_notest/group": "d49f352a15da1c36",
    "ts_notest/drop": "5f64027a45269d14",
    "ts_notest/none": "6d30101df9f178da",
    "g/group": "7f2ac15c3c5e000d",
    "g/drop": "9470f43c32212383",
    "g/none": "b5fba4d7c8845662",
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("split-trees")
    return {
        "ts": make_traffic_signs(base / "ts"),
        "ts_notest": make_traffic_signs(base / "ts_notest", test=False),
        "g": make_gtsrb(base / "g", per_class=12, num_classes=43, test_per_class=2, per_track=3),
        "cache": base / "cache",
    }


def tree_module(name: str, trees: dict[str, Path], **kwargs):
    cache = str(trees["cache"])
    if name == "g":
        return GTSRBDataModule(root=str(trees["g"]), cache_dir=cache, **kwargs)
    if name == "ts_notest":
        return TrafficSignsDataModule(root=str(trees[name]), cache_dir=cache, test_fraction=0.2, **kwargs)
    return TrafficSignsDataModule(root=str(trees[name]), cache_dir=cache, **kwargs)


@pytest.mark.parametrize("name,mode", list(itertools.product(("ts", "ts_notest", "g"), MODES)))
def test_datamodule_splits_match_the_snapshot(trees, name, mode):
    outcomes = []
    for view, shots, fraction in itertools.product(VIEWS, (None, 4), (0.1, 0.2)):
        dm = tree_module(name, trees, dedupe=mode, test_view=view, shots=shots, val_fraction=fraction)
        dm.setup()
        splits = Splits(dm.train_samples, dm.val_samples, dm.test_samples, dm.split_report)
        outcomes.append(relative(outcome(splits), str(trees[name])))
    assert digest(outcomes) == TREE_SNAPSHOT[f"{name}/{mode}"]
