"""Readers of the benchmark split files as CoOp ships and reads them (no images opened).

* ``split_zhou_<Name>.json``: ``{"train"|"val"|"test": [[relative path, label, class name], ...]}``,
  paths relative to the dataset's image folder (CoOp @ ff61507c, datasets/oxford_pets.py:122-138
  ``read_split``; written by ``save_split``, :99-120).
* FGVC-Aircraft's own lists: ``variants.txt`` (one class per line, label order) and
  ``images_variant_<split>.txt`` (``<image id> <variant name>``, image ``images/<id>.jpg``),
  datasets/fgvc_aircraft.py:22-31 and :56-71.
* ImageNet's ``classnames.txt``: ``<wnid> <class name>`` per line (datasets/imagenet.py:63-76).

Class names are returned with ``_`` read as a space, as CoOp's prompt learner does before it
tokenizes them (trainers/coop.py:98, zsclip.py:43).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from clipft.data.samples import Sample
from clipft.errors import DataError

SPLITS = ("train", "val", "test")


def display_name(name: str) -> str:
    """CoOp's prompt form of a class name: ``_`` as a space, outer whitespace stripped."""
    return name.replace("_", " ").strip()


def read_split_json(path: Path, image_root: Path) -> tuple[list[str], dict[str, list[Sample]]]:
    """Class names (label order) and train/val/test samples of a ``split_zhou_*.json``.

    Labels must be 0..K-1 with one class name each; an entry whose path leaves ``image_root``
    (``..``, an absolute path) is refused: the file may come from a stranger. Symlinked folders
    below ``image_root`` are fine (CoOp's DATASETS.md suggests them).
    """
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the split file {str(path)!r} ({exc}); download it again") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(s), list) for s in SPLITS):
        raise DataError(f"split file {str(path)!r} must map 'train', 'val' and 'test' to lists of [path, label, class name]")
    names: dict[int, str] = {}
    splits: dict[str, list[Sample]] = {}
    base = os.path.normpath(image_root)
    for split in SPLITS:
        samples = []
        for number, entry in enumerate(raw[split]):
            where = f"split file {str(path)!r} {split}[{number}]"
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)):
                raise DataError(f"{where}: expected [relative path, label, class name], got {entry!r}")
            relative, label, name = entry[0], _label(entry[1], where), str(entry[2])
            if names.setdefault(label, name) != name:
                raise DataError(f"{where}: label {label} is named {name!r} here and {names[label]!r} before")
            image = os.path.normpath(os.path.join(base, relative))
            if os.path.isabs(relative) or not image.startswith(base + os.sep):
                raise DataError(f"{where}: image path {relative!r} leaves the image folder {str(image_root)!r}")
            samples.append(Sample(image, label))
        splits[split] = samples
    return _ordered_names(names, path), splits


def _label(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{where}: the label must be an integer >= 0, got {value!r}")
    return value


def _ordered_names(names: dict[int, str], path: Path) -> list[str]:
    """Names by label id; labels must be exactly 0..K-1 (a gap would shift every later class)."""
    if sorted(names) != list(range(len(names))):
        gaps = sorted(set(range(max(names, default=-1) + 1)) - set(names))
        raise DataError(f"split file {str(path)!r}: labels must be 0..K-1, but {gaps[:10]} never occur")
    return [display_name(names[label]) for label in range(len(names))]


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_fgvc(dataset_dir: Path) -> tuple[list[str], dict[str, list[Sample]]]:
    """FGVC-Aircraft's variant lists: class names from variants.txt, splits from images_variant_*.txt."""
    names = read_lines(dataset_dir / "variants.txt")
    label_of = {name: label for label, name in enumerate(names)}
    splits = {}
    for split in SPLITS:
        file = dataset_dir / f"images_variant_{split}.txt"
        samples = []
        for number, line in enumerate(read_lines(file), start=1):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise DataError(f"{str(file)!r} line {number}: variant {variant!r} is not in variants.txt")
            samples.append(Sample(str(dataset_dir / "images" / f"{image_id}.jpg"), label_of[variant]))
        splits[split] = samples
    return [display_name(n) for n in names], splits


def read_imagenet_classnames(path: Path) -> dict[str, str]:
    """``{wnid: class name}`` in file order (CoOp's classnames.txt: CLIP's cleaned ImageNet names)."""
    names: dict[str, str] = {}
    for number, line in enumerate(read_lines(path), start=1):
        wnid, _, name = line.partition(" ")
        if not name.strip():
            raise DataError(f"{str(path)!r} line {number}: expected '<wnid> <class name>', got {line!r}")
        names[wnid] = name.strip()
    if not names:
        raise DataError(f"{str(path)!r} is empty; it should list '<wnid> <class name>' for the 1000 ImageNet classes")
    return names


def first_missing(samples: list[Sample]) -> tuple[str | None, int]:
    """The first listed image that does not exist and how many are missing (one stat per file)."""
    missing = [s.path for s in samples if not os.path.isfile(s.path)]
    return (missing[0] if missing else None), len(missing)
