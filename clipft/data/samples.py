"""What a dataset is, as data: :class:`Sample` (a path and a label) and :class:`DatasetIndex`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    path: str
    label: int


@dataclass
class DatasetIndex:
    """What a dataset is: class names in label order, the pool train/val are drawn from, optional val and test lists."""

    class_names: list[str]
    train_pool: list[Sample]
    test: list[Sample] | None = None
    val: list[Sample] | None = None  # given: used as is instead of a hold-out of the pool
    # samples that must share a split, one key per train_pool sample (GTSRB: the 30-frame track
    # of one physical sign); merged with the pixel-copy groups of data.dedupe
    pool_groups: list[str] | None = None
