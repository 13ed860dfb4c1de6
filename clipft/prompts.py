"""Class prompts: templates x class names, or per-class descriptions, as lists of strings.

Every CLIP-style module builds its text side from :func:`build_class_prompts`, so the
zero-shot head, the fine-tuning loss and the CLIs all see the same prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from clipft.errors import ConfigError, DataError

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def format_template(template: str, name: str) -> str:
    """Fill ``{}`` or ``{name}`` in a template."""
    if "{name}" in template:
        return template.replace("{name}", name)
    if "{}" in template:
        return template.replace("{}", name)
    raise ConfigError(f"prompt template {template!r} has no '{{}}' or '{{name}}' placeholder for the class name")


def load_descriptions(path: str | Path, class_names: Sequence[str]) -> dict[str, list[str]]:
    """Read ``{class name: description | [descriptions]}`` and check it covers every class exactly."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class descriptions file {str(path)!r} does not exist (set model.prompts.descriptions)")
    with path.open(encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, Mapping):
        raise DataError(f"{path}: expected a mapping 'class name: description(s)', got {type(raw).__name__}")
    raw = {str(k): v for k, v in raw.items()}
    missing = [c for c in class_names if c not in raw]
    unknown = [k for k in raw if k not in set(class_names)]
    if missing or unknown:
        raise DataError(
            f"{path}: descriptions do not match the dataset's classes; "
            f"missing: {missing or 'none'}; unknown (not a class of this dataset): {unknown or 'none'}"
        )
    out: dict[str, list[str]] = {}
    for name in class_names:
        value = raw[name]
        items = [value] if isinstance(value, str) else list(value or [])
        if not items or not all(isinstance(s, str) and s.strip() for s in items):
            raise DataError(f"{path}: class {name!r} needs a non-empty description string or list of strings")
        out[name] = items
    return out


def build_class_prompts(
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    descriptions: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[str, Sequence[str]] | None = None,
) -> list[list[str]]:
    """One list of prompts per class: every template filled with the name, then descriptions, then extras."""
    templates = list(templates or DEFAULT_TEMPLATES)
    prompts: list[list[str]] = []
    for name in class_names:
        per_class = [format_template(t, name) for t in templates]
        if descriptions:
            per_class = [*per_class, *descriptions[name]] if templates else list(descriptions[name])
        if extra and name in extra:
            per_class.extend(extra[name])
        prompts.append(per_class)
    return prompts
