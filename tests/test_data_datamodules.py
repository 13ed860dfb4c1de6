"""Each datamodule on a tiny tree of its own: sizes, names, duplicates, test overlap, configs, sampling."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import compose
from data_trees import make_gtsrb, make_traffic_signs, write_png

from clipft.data import FolderDataModule, GTSRBDataModule, TrafficSignsDataModule
from clipft.data.gtsrb import GTSRB_CLASSES
from clipft.data.traffic_signs import distinct_names


def traffic(root: Path, cache_dir: Path, **kwargs) -> TrafficSignsDataModule:
    dm = TrafficSignsDataModule(root=str(root), cache_dir=str(cache_dir), image_size=16, batch_size=8, **kwargs)
    dm.setup()
    return dm


def test_traffic_signs_group_dedupe_and_clean_test(tmp_path):
    root = make_traffic_signs(tmp_path / "ts")
    dm = traffic(root, tmp_path / "cache")
    # 6 + 6 + 6 + 1 photos, each twice
    assert dm.split_report["train"] + dm.split_report["val"] == 38
    assert dm.class_names == [
        "Speed limit (40km/h), class 0",  # (0, name) is not a known pair: the id is the qualifier
        "Go Left",
        "Speed limit (40km/h), class 2",
        "Give Way",
    ]
    dup = dm.split_report["duplicates"]
    assert (dup["pool_files"], dup["pool_distinct"], dup["pool_duplicate_files"]) == (38, 19, 19)
    # TEST: 4 leaks (one per class) are reported and left out of the clean view
    assert dup["test_files"] == 12 and dup["test_overlap_files"] == 4
    assert len(dm.test_samples) == 8
    assert not any(Path(s.path).name.endswith("_0000_j.png") for s in dm.test_samples)
    assert dup["val_files_with_copy_in_train"] == 0 and dup["test_files_with_copy_in_train"] == 0
    # the one-photo class stays in train and is named as unsplittable
    assert "Give Way" in dm.split_report["unsplittable_classes"]
    assert Counter(s.label for s in dm.train_samples)[3] == 2
    # each 6-photo class: one photo (two files) in val
    assert dm.split_report["val_class_counts"] == [2, 2, 2, 0]


def test_traffic_signs_modes_change_what_is_used(tmp_path):
    root = make_traffic_signs(tmp_path / "ts")
    dropped = traffic(root, tmp_path / "cache", dedupe="drop", test_view="all")
    assert dropped.split_report["train"] + dropped.split_report["val"] == 19
    assert len(dropped.test_samples) == 8  # 12 files minus the 4 TEST-internal copies; leaks kept
    seed_style = traffic(root, tmp_path / "cache", dedupe="none", val_fraction=0.5)
    assert seed_style.split_report["train"] + seed_style.split_report["val"] == 38
    assert seed_style.split_report["duplicates"]["val_files_with_copy_in_train"] > 0


def test_traffic_signs_without_test_folder_holds_out_test(tmp_path):
    root = make_traffic_signs(tmp_path / "ts", test=False)
    dm = traffic(root, tmp_path / "cache", test_fraction=0.2)
    paths = {"train": dm.train_samples, "val": dm.val_samples, "test": dm.test_samples}
    stems = {k: {Path(s.path).name.replace("_1_", "_") for s in v} for k, v in paths.items()}
    assert stems["test"] and not (stems["test"] & stems["train"]) and not (stems["val"] & stems["train"])
    assert sum(len(v) for v in paths.values()) == 38


def test_distinct_names_rule_is_deterministic():
    labels = {0: "A", 1: "B", 2: "A", 3: "Speed limit (40km/h)", 18: "Speed limit (40km/h)"}
    assert distinct_names(labels) == [
        "A, class 0",
        "B",
        "A, class 2",
        "Speed limit (40km/h), red ring",
        "Speed limit (40km/h), black ring",
    ]


def test_gtsrb_official_splits_and_names(tmp_path):
    root = make_gtsrb(tmp_path / "g", per_class=3, test_per_class=1)
    dm = GTSRBDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), image_size=16, test_view="all")
    dm.setup()
    assert dm.class_names == GTSRB_CLASSES and len(GTSRB_CLASSES) == 43
    assert dm.split_report["train"] + dm.split_report["val"] == 129
    assert dm.split_report["test"] == 43
    assert dm.split_report["val_class_counts"] == [1] * 43  # floor of one per class
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (3, 16, 16) and images.dtype == torch.float32


def test_gtsrb_val_is_held_out_by_track(tmp_path):
    # 2 classes x 4 tracks x 3 frames: frames of one physical sign never straddle train and val
    root = make_gtsrb(tmp_path / "g", per_class=12, num_classes=2, test_per_class=1, per_track=3)
    dm = GTSRBDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), image_size=16,
                         test_view="all", val_fraction=0.25)
    dm.setup()

    def tracks(samples):
        return {(s.label, Path(s.path).name.split("_")[0]) for s in samples}

    assert dm.split_report["val_class_counts"][:2] == [3, 3]  # one whole track per class
    assert not tracks(dm.train_samples) & tracks(dm.val_samples)

    per_image = GTSRBDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), image_size=16,
                                test_view="all", val_fraction=0.25, group_tracks=False)
    per_image.setup()
    assert tracks(per_image.train_samples) & tracks(per_image.val_samples)  # the usual leaky hold-out


def test_merge_groups_joins_samples_linked_by_any_key():
    from clipft.data.splits import merge_groups

    tracks = ["t1", "t1", "t2", "t3", "t3"]
    copies = ["a", "b", "b", "c", "d"]  # a copy links track t1 and t2
    groups = merge_groups(tracks, copies)
    assert groups[0] == groups[1] == groups[2] and groups[3] == groups[4] and groups[0] != groups[3]
    assert merge_groups(None, None) is None
    assert merge_groups(tracks, None) == [0, 0, 1, 2, 2]


def test_folder_tree_and_list_files(tmp_path):
    for c in ("cat", "dog"):
        for i in range(4):
            write_png(tmp_path / "tree" / c / f"{i}.png", seed=hash((c, i)) % 10_000)
    tree = FolderDataModule(root=str(tmp_path / "tree"), cache_dir=str(tmp_path / "cache"), test_fraction=0.25)
    tree.setup()
    assert tree.class_names == ["cat", "dog"]
    assert sum(tree.split_report[k] for k in ("train", "val", "test")) == 8

    (tmp_path / "names.txt").write_text("# label order\ndog\ncat\n")
    (tmp_path / "train.txt").write_text("".join(f"tree/dog/{i}.png dog\ntree/cat/{i}.png 1\n" for i in range(3)))
    (tmp_path / "val.txt").write_text("tree/dog/3.png 0\n")
    (tmp_path / "test.txt").write_text("tree/cat/3.png cat\n")
    lists = FolderDataModule(
        root=str(tmp_path),
        train_list=str(tmp_path / "train.txt"),
        val_list=str(tmp_path / "val.txt"),
        test_list=str(tmp_path / "test.txt"),
        class_names_file=str(tmp_path / "names.txt"),
        cache_dir=str(tmp_path / "cache"),
    )
    lists.setup()
    assert lists.class_names == ["dog", "cat"]
    assert (len(lists.train_samples), len(lists.val_samples), len(lists.test_samples)) == (6, 1, 1)
    assert lists.test_samples[0].label == 1 and lists.val_samples[0].label == 0


def test_balanced_sampler_evens_out_classes(tmp_path):
    for i in range(40):
        write_png(tmp_path / "lt" / "common" / f"{i}.png", seed=i)
    for i in range(4):
        write_png(tmp_path / "lt" / "rare" / f"{i}.png", seed=1000 + i)
    kwargs = dict(root=str(tmp_path / "lt"), cache_dir=str(tmp_path / "cache"), image_size=8, batch_size=8,
                  val_fraction=0.0, test_fraction=0.0, test_root=None)
    plain = FolderDataModule(**kwargs)
    balanced = FolderDataModule(**kwargs, balanced_sampler=True)
    balanced.setup()
    assert balanced.split_report["class_balance"]["imbalance_ratio"] == 10.0
    torch.manual_seed(0)
    drawn = torch.cat([labels for _ in range(5) for _, labels in balanced.train_dataloader()])
    share = (drawn == 1).float().mean().item()
    assert 0.35 < share < 0.65  # rare class ~50 % of draws instead of 9 %
    plain_share = torch.cat([labels for _, labels in plain.train_dataloader()]).float().mean().item()
    assert plain_share == pytest.approx(4 / 44)


def test_configs_compose_and_write_reports(tmp_path):
    root = make_traffic_signs(tmp_path / "ts")
    cfg = compose(["data=traffic_signs", f"data.root={root}"], root=tmp_path)
    from clipft.pipeline.building import build_datamodule

    dm = build_datamodule(cfg)
    assert isinstance(dm, TrafficSignsDataModule) and dm.dedupe == "group" and dm.test_view == "clean"
    assert str(dm.cache_dir).startswith(str(tmp_path))
    dm.setup()
    dm.write_reports(tmp_path / "run")
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["duplicates"]["test_overlap_files"] == 4 and report["skipped"] == []
    seed = compose(["data=traffic_signs_seed", f"data.root={root}"], root=tmp_path)
    assert (seed.data.dedupe, seed.data.normalization) == ("none", "dataset")
    gtsrb = compose(["data=gtsrb", "data.root=somewhere"], root=tmp_path)
    assert gtsrb.data.download is False and gtsrb.data._target_ == "clipft.data.GTSRBDataModule"


def test_relative_root_resolves_against_base_dir(tmp_path, monkeypatch):
    make_traffic_signs(tmp_path / "project" / "signs", per_class=(2, 2, 2, 2))
    monkeypatch.chdir(tmp_path)  # user runs from elsewhere; root is relative to the project
    dm = TrafficSignsDataModule(root="signs", base_dir=str(tmp_path / "project"), cache_dir=str(tmp_path / "c"))
    dm.setup()
    assert dm.num_classes == 4
