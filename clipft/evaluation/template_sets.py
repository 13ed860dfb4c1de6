"""Score a CLIP method once per prompt template set (``eval.py zeroshot.template_sets=[simple,imagenet80]``).

A template set is a ``prompts/<name>.yaml`` of a config tree: the running Hydra config's first,
then the one shipped in the package (``clipft/conf/prompts``), or a YAML path given directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clipft.errors import ConfigError
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.clip_zeroshot import CLIPZeroShot
from clipft.prompts import load_template_set, package_file


def template_set_path(name: str, config_roots: Sequence[Path] = ()) -> Path:
    """``<root>/prompts/<name>.yaml`` of the first root that has it (the package's last), or a YAML path."""
    if name.endswith((".yaml", ".yml")):
        return Path(name).expanduser()
    roots = [*map(Path, config_roots), package_file("conf")]
    for root in roots:
        path = root / "prompts" / f"{name}.yaml"
        if path.is_file():
            return path
    available = sorted(p.stem for p in (roots[-1] / "prompts").glob("*.yaml"))
    raise ConfigError(f"zeroshot.template_sets: no template set {name!r}; available: {available}")


def score_template_sets(
    model: Any,
    names: Sequence[str],
    score: Callable[[], dict[str, Any]],
    config_roots: Sequence[Path] = (),
) -> dict[str, dict[str, float]]:
    """``{set name: {num_templates, accuracy, macro_f1, ece}}``; the model's own prompts are restored after."""
    if not isinstance(model, (CLIPMethod, CLIPZeroShot)):
        raise ConfigError(f"zeroshot.template_sets needs a CLIP model; {type(model).__name__} has no prompts")
    base = dict((getattr(model, "hparams", {}) or {}).get("prompts") or {})
    results = {}
    try:
        for name in names:
            templates = load_template_set(template_set_path(str(name), config_roots))
            block = {**base, "templates": templates}
            if not templates and not block.get("descriptions"):
                raise ConfigError(f"template set {name!r} has no templates and the model has no descriptions")
            if block.get("train_prompt") == "description" and not block.get("descriptions"):
                block["train_prompt"] = "first"
            model.set_prompts(block)
            results[str(name)] = {"num_templates": len(templates), **brief(score())}
    finally:
        model.set_prompts(base)
    return results


def brief(report: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "ece": report["ece"]}
