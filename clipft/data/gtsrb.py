"""GTSRB (German Traffic Sign Recognition Benchmark) through ``torchvision.datasets.GTSRB``.

43 classes, the official train and test splits; validation is a seeded stratified hold-out of
train, by track: GTSRB's training images come in tracks of 30 frames of one physical sign
(``000NN/TTTTT_FFFFF.ppm``), and a random hold-out would put frames of a validation sign in
train (``group_tracks=false`` restores the per-image hold-out). ``download=true`` uses
torchvision's downloader; ``false`` reads an existing root laid out as torchvision leaves it
(``root/gtsrb/GTSRB/Training/000NN/*.ppm``, ``root/gtsrb/GTSRB/Final_Test/Images/*.ppm``,
``root/gtsrb/GT-final_test.csv``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from clipft.data.base import DatasetIndex, ImageClassificationDataModule, Sample
from clipft.errors import DataError

log = logging.getLogger(__name__)
TRACK_FILE = re.compile(r"^(\d+)_\d+\.\w+$")  # TTTTT_FFFFF.ppm: track, frame

GTSRB_CLASSES = [
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
]


def expected_paths(root: Path) -> dict[str, Path]:
    base = root / "gtsrb"
    return {
        "train": base / "GTSRB" / "Training",
        "test": base / "GTSRB" / "Final_Test" / "Images",
        "test labels": base / "GT-final_test.csv",
    }


class GTSRBDataModule(ImageClassificationDataModule):
    """GTSRB with official train/test; ``download`` fetches it with torchvision (needs internet)."""

    def __init__(self, root: str, download: bool = False, group_tracks: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.download = bool(download)
        self.group_tracks = bool(group_tracks)

    def prepare_data(self) -> None:
        if self.download:
            from torchvision.datasets import GTSRB

            root = self._root(must_exist=False)
            root.mkdir(parents=True, exist_ok=True)
            for split in ("train", "test"):
                GTSRB(str(root), split=split, download=True)

    def _root(self, must_exist: bool = True) -> Path:
        from clipft.data.paths import resolve_path

        return resolve_path(
            self.root,
            base_dir=self.base_dir,
            must_exist=must_exist,
            hint=" (the folder that holds gtsrb/), or set data.download=true to fetch GTSRB",
        )

    def build_index(self) -> DatasetIndex:
        from torchvision.datasets import GTSRB

        if self.download:
            self.prepare_data()
        root = self._root()
        missing = {what: p for what, p in expected_paths(root).items() if not p.exists()}
        if missing:
            listing = ", ".join(f"{what}: {str(p)!r}" for what, p in missing.items())
            raise DataError(
                f"GTSRB files are missing under data.root={str(root)!r}: expected {listing}. "
                "Point data.root at the folder holding gtsrb/ (torchvision's layout), or set data.download=true"
            )
        splits = {}
        for split in ("train", "test"):
            try:
                samples = GTSRB(str(root), split=split, download=False)._samples
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                raise DataError(f"cannot read the GTSRB {split} split under {str(root)!r}: {exc}") from exc
            splits[split] = [Sample(path, int(label)) for path, label in samples]
            bad = sorted({s.label for s in splits[split]} - set(range(len(GTSRB_CLASSES))))
            if bad:
                raise DataError(f"GTSRB {split} split under {str(root)!r} has labels {bad} outside 0..42")
            if not splits[split]:
                raise DataError(f"GTSRB {split} split under {str(root)!r} holds no images")
        groups = track_groups(splits["train"]) if self.group_tracks else None
        return DatasetIndex(
            class_names=list(GTSRB_CLASSES), train_pool=splits["train"], test=splits["test"], pool_groups=groups
        )


def track_groups(samples: list[Sample]) -> list[str] | None:
    """``class/track`` per training image, or None (with a warning) when file names are not GTSRB's."""
    groups = []
    for sample in samples:
        match = TRACK_FILE.match(Path(sample.path).name)
        if match is None:
            log.warning(
                "GTSRB file %r is not named TRACK_FRAME.ppm: validation is held out per image, not per track",
                sample.path,
            )
            return None
        groups.append(f"{sample.label}/{match.group(1)}")
    return groups
