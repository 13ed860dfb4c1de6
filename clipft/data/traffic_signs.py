"""The 58-class "Traffic Sign Dataset - Classification" (Chinese signs).

Layout::

    root/labels.csv                         ClassId,Name
    root/traffic_Data/DATA/<ClassId>/*.png  the pool train/val are drawn from
    root/traffic_Data/TEST/<ClassId:03d>_<n>_j.png   optional test folder, label in the file name

``labels.csv`` repeats two names (``Speed limit (40km/h)`` / ``(50km/h)`` for both the red and
the black signs, ``Bicycles crossing`` for the blue round sign and the warning triangle). Names
are made distinct deterministically: a repeated name gets a suffix ", <qualifier>" on *every*
class that shares it, the qualifier from :data:`KNOWN_QUALIFIERS` (what the images show) when
the (ClassId, name) pair is known, else ``class <ClassId>``.

DATA holds each photo twice (``NNN_1_XXXX.png`` copies ``NNN_XXXX.png``) and TEST shares photos
with DATA: the base class's ``data.dedupe`` / ``data.test_view`` handle both.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import Any

from clipft.data.base import DatasetIndex, ImageClassificationDataModule, Sample
from clipft.data.images import is_image_file
from clipft.errors import DataError

# (ClassId, name in labels.csv) -> qualifier, checked against the images.
KNOWN_QUALIFIERS: dict[tuple[int, str], str] = {
    (3, "Speed limit (40km/h)"): "red ring",
    (18, "Speed limit (40km/h)"): "black ring",
    (4, "Speed limit (50km/h)"): "red ring",
    (19, "Speed limit (50km/h)"): "black ring",
    (30, "Bicycles crossing"): "blue round sign",
    (36, "Bicycles crossing"): "warning triangle",
}
TEST_NAME = re.compile(r"^(\d{3})_")


def read_labels_csv(path: Path) -> dict[int, str]:
    """``ClassId -> Name`` from labels.csv, with errors that name the file, the row and the fix."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"ClassId", "Name"} <= {f.strip() for f in reader.fieldnames}:
                raise DataError(
                    f"{str(path)!r} must have a header 'ClassId,Name', found {reader.fieldnames}; fix the header row"
                )
            labels: dict[int, str] = {}
            for row_number, row in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                if not row["ClassId"].isdigit() or not row["Name"]:
                    raise DataError(f"{str(path)!r} row {row_number}: expected '<integer ClassId>,<name>', got {row}")
                class_id = int(row["ClassId"])
                if class_id in labels:
                    raise DataError(f"{str(path)!r} row {row_number}: ClassId {class_id} is listed twice")
                labels[class_id] = row["Name"]
    except UnicodeDecodeError as exc:
        raise DataError(f"{str(path)!r} is not UTF-8 text ({exc}); re-save labels.csv as UTF-8") from exc
    if not labels:
        raise DataError(f"{str(path)!r} lists no classes; expected one 'ClassId,Name' row per class")
    return labels


def distinct_names(labels: dict[int, str]) -> list[str]:
    """Class names in ClassId order, a repeated name qualified on every class that shares it."""
    counts = Counter(labels.values())
    names = []
    for class_id in sorted(labels):
        name = labels[class_id]
        if counts[name] > 1:
            name = f"{name}, {KNOWN_QUALIFIERS.get((class_id, name), f'class {class_id}')}"
        names.append(name)
    if len(set(names)) != len(names):  # a qualified name collided with a plain one: fall back to ids
        names = [f"{labels[c]} (class {c})" if counts[labels[c]] > 1 else labels[c] for c in sorted(labels)]
    return names


class TrafficSignsDataModule(ImageClassificationDataModule):
    """58-class Chinese traffic signs; TEST (if present and ``use_test_folder``) is the test split."""

    def __init__(self, root: str, use_test_folder: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.use_test_folder = bool(use_test_folder)

    def build_index(self) -> DatasetIndex:
        hint = " (the folder holding labels.csv and traffic_Data/)"
        root = self.resolve(self.root, hint=hint)
        labels_file, data_dir = root / "labels.csv", root / "traffic_Data" / "DATA"
        for expected in (labels_file, data_dir):
            if not expected.exists():
                raise DataError(f"{str(expected)!r} does not exist; data.root must be the folder holding labels.csv "
                                f"and traffic_Data/DATA/<ClassId>/ (got data.root={str(root)!r})")
        labels = read_labels_csv(labels_file)
        ids = sorted(labels)
        label_of = {class_id: i for i, class_id in enumerate(ids)}
        folders = {d.name: d for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith(".")}
        odd = sorted(name for name in folders if not name.isdigit())
        unknown = sorted(int(n) for n in folders if n.isdigit() and int(n) not in labels)
        missing = [c for c in ids if str(c) not in folders]
        if odd or unknown or missing:
            raise DataError(
                f"{str(labels_file)!r} disagrees with the folders in {str(data_dir)!r}: "
                + "; ".join(
                    part
                    for part in (
                        f"folders not named by a ClassId: {odd}" if odd else "",
                        f"folders with no row in labels.csv: {unknown}" if unknown else "",
                        f"ClassIds with no folder: {missing}" if missing else "",
                    )
                    if part
                )
                + ". Add the missing rows/folders or remove the extra ones"
            )
        pool: list[Sample] = []
        for class_id in ids:
            folder = folders[str(class_id)]
            files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
            if not files:
                raise DataError(
                    f"class folder {str(folder)!r} ({labels[class_id]!r}) holds no images; add its images, "
                    "or delete the folder and its row in labels.csv"
                )
            pool.extend(Sample(str(p), label_of[class_id]) for p in files)
        test_dir = root / "traffic_Data" / "TEST"
        test = self._read_test(test_dir, label_of) if self.use_test_folder and test_dir.is_dir() else None
        return DatasetIndex(class_names=distinct_names(labels), train_pool=pool, test=test)

    @staticmethod
    def _read_test(test_dir: Path, label_of: dict[int, int]) -> list[Sample]:
        samples = []
        for path in sorted(p for p in test_dir.iterdir() if p.is_file() and is_image_file(p)):
            match = TEST_NAME.match(path.name)
            if not match:
                raise DataError(
                    f"test file {str(path)!r} is not named '<ClassId:03d>_<n>_j.png'; rename it or move it out of TEST"
                )
            class_id = int(match.group(1))
            if class_id not in label_of:
                raise DataError(f"test file {str(path)!r} has ClassId {class_id}, which labels.csv does not list")
            samples.append(Sample(str(path), label_of[class_id]))
        if not samples:
            raise DataError(f"test folder {str(test_dir)!r} holds no images; remove it or set data.use_test_folder=false")
        return samples
