"""Per-dataset prompt templates and CLIP's class names, read from the package's data files.

``templates.yaml`` holds, per benchmark, CoOp's hand-crafted template (``coop``) and CLIP's
template ensemble (``clip``, the 80 ImageNet templates for the ImageNet family) with their
sources; ``classnames.yaml`` CLIP's wording of the class names. The Hydra prompt sets
``conf/prompts/coop/<dataset>.yaml`` and ``conf/prompts/clip/<dataset>.yaml`` are these lists
(tests/test_benchmark_datasets.py keeps them equal):
``python train.py data=oxford_pets prompts@model.prompts=coop/oxford_pets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from clipft.errors import ConfigError, DataError
from clipft.prompts import format_template, package_file
from clipft.utils.file_gate import read_yaml_mapping

STYLES = ("coop", "clip")


@cache
def _table(name: str) -> dict[str, Any]:
    return read_yaml_mapping(str(package_file(f"data/benchmarks/{name}.yaml")), DataError)  # the one YAML reader


def benchmark_names() -> list[str]:
    """Every dataset ``templates.yaml`` knows (clipft's data config names)."""
    return list(_table("templates"))


def dataset_templates(dataset: str, style: str = "coop", class_names: Sequence[str] | None = None) -> list[str]:
    """The ``style`` templates of ``dataset``; ``class_names`` given: their number must be the dataset's class count."""
    table = _table("templates")
    if dataset not in table:
        raise ConfigError(f"no prompt templates for dataset {dataset!r}; known: {sorted(table)}")
    if style not in STYLES:
        raise ConfigError(f"template style {style!r} must be one of {list(STYLES)}")
    entry = table[dataset]
    found = entry.get(style)
    if not found:
        raise ConfigError(f"{dataset} has no {style!r} template (CoOp defines none for it); use style='clip'")
    templates = [found] if isinstance(found, str) else list(found)
    for template in templates:
        format_template(template, "x")  # each must carry the class-name placeholder
    if class_names is not None and len(class_names) != entry["num_classes"]:
        raise DataError(
            f"{dataset} has {entry['num_classes']} classes but {len(class_names)} class names were given; "
            "a partial or different copy of the dataset would be scored against the wrong prompts"
        )
    return templates


def clip_class_names(dataset: str) -> list[str]:
    """CLIP's class names of ``dataset`` in label order (openai/CLIP data/prompts.md; ImageNet: open_clip's)."""
    table = _table("classnames")
    if dataset not in table:
        raise ConfigError(f"no CLIP class names for dataset {dataset!r}; known: {sorted(table)}")
    return list(table[dataset]["names"])
