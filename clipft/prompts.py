"""Class prompts: templates x class names, plus per-class descriptions and extras.

Every CLIP-style module builds its text side from :func:`build_prompt_set`, so the zero-shot
head, the fine-tuning loss, the linear-probe initialisation and the CLIs all see the same
prompts. Template sets live in ``clipft/conf/prompts/*.yaml``; descriptions in
``clipft/class_descriptions/<dataset>.yaml``. Both ship inside the package and are found through
:mod:`importlib.resources`, so an installed wheel needs no source checkout.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clipft.errors import ConfigError, DataError

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
# What the contrastive loss encodes for a class at each step.
# ``per_image``: every image of the batch gets its own random caption of its class (alignment).
TRAIN_PROMPT_MODES = ("first", "name", "random", "description", "per_image")
# "class_descriptions/x.yaml" and "conf/prompts/x.yaml" name files shipped inside the package
PACKAGE_FILES = ("class_descriptions", "conf")


def format_template(template: str, name: str) -> str:
    """Fill ``{}`` or ``{name}`` in a template."""
    if "{name}" in template:
        return template.replace("{name}", name)
    if "{}" in template:
        return template.replace("{}", name)
    raise ConfigError(f"prompt template {template!r} has no '{{}}' or '{{name}}' placeholder for the class name")


def package_file(relative: str | Path) -> Path:
    """A file shipped in the clipft package (``class_descriptions/gtsrb.yaml``, ``conf/prompts/simple.yaml``)."""
    from importlib.resources import files

    return Path(str(files("clipft").joinpath(*Path(relative).parts)))


def resolve_project_file(path: str | Path) -> Path:
    """``path`` as given when it exists, else the packaged file of that name (``class_descriptions/x.yaml``)."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    if path.parts and path.parts[0] in PACKAGE_FILES:
        candidate = package_file(path)
        if candidate.exists():
            return candidate
    return path


def _read_yaml_mapping(path: Path, what: str) -> Mapping[Any, Any]:
    if not path.is_file():
        raise DataError(f"{what} file {str(path)!r} does not exist")
    try:
        with path.open(encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, Mapping):
        raise DataError(f"{path}: expected a mapping, got {type(raw).__name__}")
    return raw


def _match_class_keys(
    raw: Mapping[Any, Any], class_names: Sequence[str], path: Path, dataset_classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Map each key to a class: by name first, else by integer label index (``0: ...``).

    Names win so folder datasets whose class names are ids ("0", "17") match by folder id.
    ``dataset_classes``: the whole dataset's classes when the run keeps a subset (``data.classes=base|novel``):
    ids index that list, and keys of the dataset's other classes are skipped, not unknown.
    Lists every missing and every unknown key in one error.
    """
    names = list(class_names)
    label_space = list(dataset_classes) if dataset_classes else names
    name_set, space_set = set(names), set(label_space)
    matched: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        skey = str(key).strip()
        if skey in space_set:
            target = skey
        elif skey.lstrip("-").isdigit() and 0 <= int(skey) < len(label_space):
            target = label_space[int(skey)]
        else:
            unknown.append(skey)
            continue
        if target not in name_set:
            continue  # a class of the dataset this run leaves out
        if target in matched:
            raise DataError(f"{path}: class {target!r} is given twice (by name and by id {skey!r}); keep one")
        matched[target] = value
    missing = [c for c in names if c not in matched]
    if missing or unknown:
        raise DataError(
            f"{path}: descriptions do not match the dataset's {len(names)} classes; "
            f"missing: {missing or 'none'}; unknown (not a class name or label id of this dataset): "
            f"{unknown or 'none'}. Keys may be class names or integer label ids."
        )
    return matched


def load_descriptions(path: str | Path, class_names: Sequence[str], dataset_classes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Read ``{class name | label id: description | [descriptions]}``; every class must be covered."""
    path = resolve_project_file(path)
    if not path.is_file():
        raise DataError(
            f"class descriptions file {str(path)!r} does not exist (set model.prompts.descriptions to "
            "a file such as class_descriptions/gtsrb.yaml)"
        )
    matched = _match_class_keys(_read_yaml_mapping(path, "class descriptions"), class_names, path, dataset_classes)
    out: dict[str, list[str]] = {}
    for name in class_names:
        value = matched[name]
        items = [value] if isinstance(value, str) else list(value or [])
        if not items or not all(isinstance(s, str) and s.strip() for s in items):
            raise DataError(f"{path}: class {name!r} needs a non-empty description string or list of strings")
        out[name] = [s.strip() for s in items]
    return out


def load_template_set(path: str | Path) -> list[str]:
    """The ``templates`` list of a ``conf/prompts/<name>.yaml`` file."""
    path = Path(path)
    raw = _read_yaml_mapping(path, "prompt template set")
    templates = raw.get("templates")
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise ConfigError(f"{path}: 'templates' must be a list of strings with a '{{}}' placeholder")
    for t in templates:
        format_template(t, "x")
    return list(templates)


@dataclass
class PromptSet:
    """Per class (label order): name prompts (templates filled in) and description prompts (+ extras)."""

    class_names: list[str]
    named: list[list[str]]
    described: list[list[str]]

    @property
    def per_class(self) -> list[list[str]]:
        """Every prompt of each class: what the zero-shot head averages."""
        return [n + d for n, d in zip(self.named, self.described)]

    def captions_for(self, labels: Sequence[int], rng: random.Random | None = None) -> list[str]:
        """One random prompt of its class for every label (``train_prompt: per_image``)."""
        rng = rng or random
        return [rng.choice(self.per_class[int(label)]) for label in labels]

    def training_prompts(self, mode: str = "first", rng: random.Random | None = None) -> list[str]:
        """One prompt per class for a training step: ``first``/``name`` (first name prompt),
        ``description`` (a random description) or ``random`` (any of the class's prompts)."""
        rng = rng or random
        if mode in ("first", "name"):
            return [n[0] if n else d[0] for n, d in zip(self.named, self.described)]
        if mode == "description":
            if not all(self.described):
                raise ConfigError(
                    "model.prompts.train_prompt=description needs model.prompts.descriptions "
                    "(a class_descriptions/<dataset>.yaml file)"
                )
            return [rng.choice(d) for d in self.described]
        if mode in ("random", "per_image"):
            return [rng.choice(p) for p in self.per_class]
        raise ConfigError(f"model.prompts.train_prompt={mode!r} must be one of {list(TRAIN_PROMPT_MODES)}")


def build_prompt_set(
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    descriptions: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[Any, Sequence[str] | str] | None = None,
) -> PromptSet:
    """Templates (``None``: the default single template; ``[]``: none) x names, then descriptions and extras."""
    names = list(class_names)
    templates = list(DEFAULT_TEMPLATES) if templates is None else list(templates)
    if not templates and not descriptions:
        raise ConfigError("model.prompts: templates is empty and no descriptions are given: no prompt for any class")
    extras: dict[str, Any] = {}
    if extra:
        unknown = [k for k in extra if str(k) not in set(names) and not (str(k).isdigit() and int(k) < len(names))]
        if unknown:
            raise ConfigError(f"model.prompts.extra names unknown classes {unknown}; keys are class names or label ids")
        for key, value in extra.items():
            name = str(key) if str(key) in set(names) else names[int(key)]
            extras[name] = [value] if isinstance(value, str) else list(value)
    named = [[format_template(t, name) for t in templates] for name in names]
    described = [[*(descriptions[name] if descriptions else []), *extras.get(name, [])] for name in names]
    return PromptSet(names, named, described)


def build_class_prompts(
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    descriptions: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[Any, Sequence[str] | str] | None = None,
) -> list[list[str]]:
    """One list of prompts per class: every template filled with the name, then descriptions, then extras."""
    return build_prompt_set(class_names, templates, descriptions, extra).per_class


def prompt_set_from_config(class_names: Sequence[str], prompts: Mapping[str, Any] | None) -> PromptSet:
    """The ``model.prompts`` block (``templates``, ``descriptions``, ``extra``) as a :class:`PromptSet`."""
    prompts = dict(prompts or {})
    # dataset_classes: set by the pipeline when the run keeps a subset of the dataset's classes (data.classes),
    # so that descriptions keyed by the dataset's label ids reach the right class
    known = {"templates", "descriptions", "extra", "train_prompt", "dataset_classes"}
    unknown = sorted(set(prompts) - known)
    if unknown:
        raise ConfigError(f"model.prompts has unknown keys {unknown}; allowed: {sorted(known)}")
    descriptions = (load_descriptions(prompts["descriptions"], class_names, prompts.get("dataset_classes"))
                    if prompts.get("descriptions") else None)
    mode = prompts.get("train_prompt") or "first"
    if mode not in TRAIN_PROMPT_MODES:
        raise ConfigError(f"model.prompts.train_prompt={mode!r} must be one of {list(TRAIN_PROMPT_MODES)}")
    if mode == "description" and descriptions is None:
        raise ConfigError(
            "model.prompts.train_prompt=description needs model.prompts.descriptions "
            "(e.g. class_descriptions/gtsrb.yaml)"
        )
    return build_prompt_set(class_names, prompts.get("templates"), descriptions, prompts.get("extra"))
