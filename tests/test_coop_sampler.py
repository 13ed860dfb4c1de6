"""data.shot_sampler=coop: CoOp's few-shot split exactly, written beside the run and reused from the file.

The reference is Dassl's ``DatasetBase.generate_fewshot_dataset`` (KaiyangZhou/Dassl.pytorch @ c61a1b5,
``dassl/data/datasets/base_dataset.py:167-223``, ``repeat=False`` by default since e3a15da) as CoOp's datasets
call it (KaiyangZhou/CoOp @ ff61507, ``datasets/oxford_pets.py:44-45``: train with ``num_shots``, then val with
``min(num_shots, 4)``, after ``set_random_seed(cfg.SEED)``, ``train.py:132`` / ``dassl/utils/tools.py:73-77``).
:func:`dassl_reference` below transcribes it (global ``random``, labels in order of first appearance).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest

from clipft.data.few_shot import FewShotSplit, coop_shots, dassl_fewshot, split_from_record, split_record
from clipft.data.samples import DatasetIndex, Sample
from clipft.data.split_policy import SplitPolicy, make_splits
from clipft.errors import ConfigError, DataError


def dassl_reference(data_source, num_shots, repeat=False):
    """base_dataset.py:167-223 @ c61a1b5, one data source: ``random`` is the global module, seeded by the caller."""
    tracker = defaultdict(list)  # split_dataset_by_label
    for item in data_source:
        tracker[item.label].append(item)
    dataset = []
    for _, items in tracker.items():
        if len(items) >= num_shots:
            sampled_items = random.sample(items, num_shots)
        elif repeat:
            sampled_items = random.choices(items, k=num_shots)
        else:
            sampled_items = items
        dataset.extend(sampled_items)
    return dataset


def coop_reference(train, val, num_shots, seed):
    """CoOp datasets/oxford_pets.py:44-45 after set_random_seed(seed)."""
    state = random.getstate()
    try:
        random.seed(seed)
        return dassl_reference(train, num_shots), dassl_reference(val, min(num_shots, 4))
    finally:
        random.setstate(state)


def samples(labels, prefix="img"):
    return [Sample(f"/data/{prefix}/{i:03d}.png", label) for i, label in enumerate(labels)]


def interleaved(counts, prefix, seed=0):
    """A shuffled list with ``counts[c]`` samples of label ``c`` (labels first appear out of order)."""
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    random.Random(seed).shuffle(labels)
    return samples(labels, prefix)


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_coop_shots_equal_the_transcribed_dassl_sampler(shots, seed):
    train = interleaved([20, 3, 17, 9, 30], "train", seed)  # label 1 has fewer than K for K > 3: kept whole
    val = interleaved([5, 2, 6, 4, 3], "val", seed + 10)
    picked = coop_shots(train, val, shots, seed)
    ref_train, ref_val = coop_reference(train, val, shots, seed)
    assert picked.train == ref_train and picked.val == ref_val  # same items, same order
    assert picked.sampler == "coop" and picked.seed == seed and picked.shots == shots


def test_coop_shots_by_hand():
    # labels first appear as 2, 0, 1 (train) and 1, 0, 2 (val): Dassl's output is grouped in that order; a class
    # with fewer than K items keeps them in list order (no draw), the others take random.sample(items, K) from one
    # stream seeded with the seed, train's classes first, then val's with min(K, 4)
    train = samples([2, 0, 2, 1, 0, 2, 1, 0, 0], "t")  # 2: [0, 2, 5], 0: [1, 4, 7, 8], 1: [3, 6]
    val = samples([1, 0, 2, 0, 1, 2, 0], "v")  # 1: [0, 4], 0: [1, 3, 6], 2: [2, 5]
    picked = coop_shots(train, val, 3, seed=7)
    rng = random.Random(7)
    by_hand_train = [[0, 2, 5][j] for j in rng.sample(range(3), 3)] + [[1, 4, 7, 8][j] for j in rng.sample(range(4), 3)] + [3, 6]
    by_hand_val = [0, 4] + [[1, 3, 6][j] for j in rng.sample(range(3), 3)] + [2, 5]
    assert [train.index(s) for s in picked.train] == by_hand_train
    assert [val.index(s) for s in picked.val] == by_hand_val
    # the draw pinned for this seed (Python's Mersenne Twister and random.sample are stable across versions)
    assert by_hand_train == [2, 0, 5, 1, 8, 7, 3, 6] and by_hand_val == [0, 4, 3, 1, 6, 2, 5]
    assert picked.report["classes_with_fewer_images"] == {"1": 2}


def test_dassl_repeat_rule_draws_with_replacement():
    rng_a, rng_b = random.Random(3), random.Random(3)
    labels = [0, 0, 1, 1, 1, 1]
    assert dassl_fewshot(labels, 3, rng_a, repeat=True)[:3] == rng_b.choices([0, 1], k=3)
    assert dassl_fewshot(labels, 3, random.Random(3))[:2] == [0, 1]  # default (c61a1b5): a short class is kept whole


def plain(**kwargs) -> SplitPolicy:
    """A policy that needs no pixel hashes (no dedupe, no leak check)."""
    return SplitPolicy(dedupe="none", test_view="all", **kwargs)


def index_of(counts_train, counts_test, val_counts=None):
    train = interleaved(counts_train, "pool", 5)
    test = samples([c for c, n in enumerate(counts_test) for _ in range(n)], "test")
    val = interleaved(val_counts, "val", 6) if val_counts else None
    return DatasetIndex([f"class {c}" for c in range(len(counts_train))], train, test=test, val=val)


def test_make_splits_with_the_coop_sampler_shrinks_train_and_val_only():
    index = index_of([12, 9, 15, 8], [3, 3, 3, 3], val_counts=[6, 6, 2, 7])
    policy = plain(shots=4, seed=42, shot_seed=1, shot_sampler="coop")
    splits = make_splits(index, policy)
    ref_train, ref_val = coop_reference(index.train_pool, index.val, 4, 1)
    assert splits.train == ref_train and splits.val == ref_val and splits.test == index.test
    assert splits.report["train_class_counts"] == [4, 4, 4, 4] and splits.report["val_class_counts"] == [4, 4, 2, 4]
    assert splits.report["few_shot"]["sampler"] == "coop" and splits.report["few_shot"]["val_images"] == 14
    clipft = make_splits(index, plain(shots=4, shot_seed=1))
    assert clipft.val == index.val and clipft.report["few_shot"].get("sampler") is None  # the default sampler: unchanged
    with pytest.raises(ConfigError, match="data.shot_sampler='dassl' is not allowed"):
        SplitPolicy(shot_sampler="dassl")


def test_split_record_round_trips_and_a_given_split_is_used_exactly(tmp_path):
    index = index_of([10, 10, 10], [2, 2, 2], val_counts=[5, 5, 5])
    drawn = make_splits(index, plain(shots=2, shot_seed=3, shot_sampler="coop"))
    record = split_record(drawn.few_shot, "/data")
    assert record["train"][0] == [drawn.train[0].path[len("/data/"):], drawn.train[0].label]
    assert (record["seed"], record["shots"], record["sampler"]) == (3, 2, "coop")
    reread = split_from_record(json.loads(json.dumps(record)), "split.json", "/data")
    again = make_splits(index, plain(shots=2, shot_seed=99, shot_sampler="coop"), given=reread)
    assert again.train == drawn.train and again.val == drawn.val  # another seed, the same file: the same split
    assert again.report["few_shot"]["given"] is True
    with pytest.raises(ConfigError, match="holds a 2-shot split"):
        make_splits(index, plain(shots=4), given=reread)
    stranger = FewShotSplit([Sample("/data/test/000.png", 0)], [], 1, 2, "coop")  # a test image: refused
    with pytest.raises(ConfigError, match="is a test image"):
        make_splits(index, plain(), given=stranger)
    relabelled = FewShotSplit([Sample(drawn.train[0].path, drawn.train[0].label + 1)], [], 1, 2, "coop")
    with pytest.raises(ConfigError, match="labelled"):
        make_splits(index, plain(), given=relabelled)
    for bad in ({**record, "train": [["/abs/x.png", 0]]}, {**record, "val": [["../x.png", 0]]}, {**record, "shots": "2"}):
        with pytest.raises(DataError, match="fewshot_split_file"):
            split_from_record(bad, "split.json", "/data")


def test_the_datamodule_writes_the_split_and_a_second_run_reuses_it(tmp_path, synthetic_root):
    from clipft.data import SyntheticSignsDataModule

    def module(**kwargs):
        return SyntheticSignsDataModule(root=str(synthetic_root), train_per_class=24, test_per_class=6, dedupe="none",
                                        test_view="all", cache_dir=str(tmp_path / "cache"), shots=2, **kwargs)

    first = module(shot_sampler="coop", shot_seed=5)
    first.setup()
    first.write_reports(tmp_path / "run")
    written = json.loads((tmp_path / "run" / "fewshot_split.json").read_text())
    assert len(written["train"]) == 2 * first.num_classes and len(written["val"]) == 2 * first.num_classes
    assert all(not p.startswith("/") for p, _ in written["train"]) and written["sampler"] == "coop"
    second = module(shot_sampler="coop", shot_seed=6, fewshot_split_file=str(tmp_path / "run" / "fewshot_split.json"))
    second.setup()
    assert second.train_samples == first.train_samples and second.val_samples == first.val_samples
    third = module(shot_sampler="coop", shot_seed=6)
    third.setup()
    assert third.train_samples != first.train_samples  # the seed decides when no file is given
    (tmp_path / "broken.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a JSON object"):
        module(fewshot_split_file=str(tmp_path / "broken.json")).setup()
