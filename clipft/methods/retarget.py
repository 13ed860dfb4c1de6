"""A trained module scoring another list of classes: base-to-novel, cross-dataset transfer.

:func:`retarget` rebuilds the module from its own hyper-parameters with the new class names, loads
every state entry that does not depend on the classes, and rebuilds those that do. Which entries
depend on the classes, and what scores a class the module never saw, is declared per method in ONE
table, :data:`RETARGET`, keyed by the method's registry name (``tests/test_base2novel.py`` checks that
every registered method has a row, so a new method cannot be added without deciding):

====================  =========================  ====================================================
method                class-indexed state        a class it was not trained on
====================  =========================  ====================================================
CLIPZeroShot          none                       zero-shot, as any class
CoOp                  none (unified context)     the learned context with the new name; class-specific
                                                 context (CSC) has no context for it: ConfigError
CoCoOp                none                       the context + meta-net with the new name
CLIPAdapter           none                       the adapted image feature vs. the zero-shot text
ContrastiveFineTune   none                       the fine-tuned towers' class text of the new name
PEFTFineTune          none                       the same, adapters included
TipAdapter            ``cache_values``           a zero cache column: the paper's cache has no keys
                                                 there, so the class reads as zero-shot
CLAP                  ``weight``, ``penalty``    its row starts at the text anchor (CLAP's own
                                                 initialisation: zero-shot), penalty 0
LinearHeadFineTune    ``head.weight/bias``       ``exp(logit_scale) * class text`` (the zero-shot
                                                 head it was initialised like) on the tuned tower
CLIPLinearProbe       ``head.weight/bias``       the probe has no text side: a subset of its classes
                                                 keeps their rows; any other list gets the zero-shot
                                                 classifier of its frozen backbone (CLIPZeroShot)
CNNTransfer           ``head.1.weight/bias``     a subset keeps its rows; other classes: ConfigError
KgCoOp                none (unified context)     as CoOp
TaskRes               ``residual``, ``base_text``  residual 0 on its text classifier: zero-shot
LPPlusPlus            ``weight, bias, alpha``    ``W = 0, b = 0``, alpha the trained classes' mean: its
                                                 text logits alone, on the trained classes' scale
CLIPSVD               none                       the tuned towers' text of the new class's prompts
====================  =========================  ====================================================

A class the module was trained on keeps its learned row wherever the new list puts it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clipft.errors import ConfigError

Fill = Callable[[Any, Any, list[str]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Rule:
    """How one method moves to other classes.

    ``class_state``: the state-dict keys indexed by class (rebuilt by ``rebuild``; all else loads as is).
    ``unseen``: what scores a class the module was not trained on, in words (the docs' table).
    ``rebuild(old, new, names)``: the class-indexed entries for ``names`` (``new`` already holds the rest).
    ``check(old, names)``: raise when this module cannot move. ``fallback(old, names)``: the module to
    return instead when ``names`` holds classes it has no weights for (None: rebuild as the others).
    ``refresh(new)``: recompute what the constructor derived from the weights before they were loaded
    (not in the state dict: CoOp's prompt token embeddings, read from the token table at construction).
    """

    class_state: tuple[str, ...]
    unseen: str
    rebuild: Fill | None = None
    check: Callable[[Any, list[str]], None] | None = None
    fallback: Callable[[Any, list[str]], Any] | None = None
    refresh: Callable[[Any], None] | None = None


def rows(old: torch.Tensor, old_names: Sequence[str], names: Sequence[str], fill: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``old``'s slices along ``dim`` re-ordered to ``names``; a name ``old`` lacks takes ``fill``'s slice."""
    index = {name: i for i, name in enumerate(old_names)}
    out = fill.detach().clone().to(old.dtype).to(old.device)
    for j, name in enumerate(names):
        if name in index:
            out.select(dim, j).copy_(old.detach().select(dim, index[name]))
    return out


def _no_class_specific_context(old: Any, names: list[str]) -> None:
    if getattr(old, "class_specific", False) and list(names) != list(old.class_names):
        raise ConfigError(
            "a class-specific CoOp context (model.class_specific=true) holds one context per trained class: it "
            "cannot score other classes. Train with the unified context (model.class_specific=false) for "
            "base-to-novel or cross-dataset transfer"
        )


@torch.no_grad()
def _prompt_embeddings(new: Any) -> None:
    """CoOp / CoCoOp: the class prompts' token embeddings again, from the loaded token table (the constructor
    read them from the table it was built with); the tokens in tokenised order are ``prompt_ids`` un-permuted."""
    ids, order = new.prompt_ids, new.prompt_order
    if order is not None:
        ids = torch.empty_like(ids).scatter_(1, order, ids)
    new.prompt_embeddings = new.backbone.token_embedding()(ids).detach().clone()


def _tip_values(old: Any, new: Any, names: list[str]) -> dict[str, torch.Tensor]:
    values = old.cache_values
    zeros = torch.zeros(values.shape[0], len(names), dtype=values.dtype)
    return {"cache_values": rows(values, old.class_names, names, zeros, dim=1)}


@torch.no_grad()
def _clap_rows(old: Any, new: Any, names: list[str]) -> dict[str, torch.Tensor]:
    anchors = new.anchor_text().to(old.weight.dtype)
    return {
        "weight": rows(old.weight, old.class_names, names, anchors),
        "penalty": rows(old.penalty, old.class_names, names, torch.zeros(len(names))),
    }


@torch.no_grad()
def _zeroshot_head_rows(old: Any, new: Any, names: list[str]) -> dict[str, torch.Tensor]:
    fresh = [n for n in names if n not in old.class_names]
    weight = torch.zeros(len(names), old.head.weight.shape[1])
    if fresh:
        new.to(old.device)
        weight = (new.logit_scale() * new.class_text_features()).float().cpu()
    return {
        "head.weight": rows(old.head.weight, old.class_names, names, weight),
        "head.bias": rows(old.head.bias, old.class_names, names, torch.zeros(len(names))),
    }


def _head_rows(prefix: str) -> Fill:
    def rebuild(old: Any, new: Any, names: list[str]) -> dict[str, torch.Tensor]:
        state = old.state_dict()
        weight, bias = state[f"{prefix}.weight"], state[f"{prefix}.bias"]
        return {
            f"{prefix}.weight": rows(weight, old.class_names, names, torch.zeros(len(names), weight.shape[1])),
            f"{prefix}.bias": rows(bias, old.class_names, names, torch.zeros(len(names))),
        }

    return rebuild


def _probe_zeroshot(old: Any, names: list[str]) -> Any:
    """The probe's frozen backbone as a zero-shot classifier (default prompts) of ``names``."""
    from clipft.methods.clip_zeroshot import CLIPZeroShot

    with torch.random.fork_rng(devices=[]):
        new = CLIPZeroShot(names, clip=dict(old.hparams["clip"]))
    state = {f"backbones.0.{k[len('backbone.'):]}": v for k, v in old.state_dict().items() if k.startswith("backbone.")}
    new.load_state_dict(state, strict=True)
    return new


@torch.no_grad()
def _taskres_rows(old: Any, new: Any, names: list[str]) -> dict[str, torch.Tensor]:
    residual = old.residual
    return {  # base_ready 0: the text classifier T of the new list is computed from the frozen text tower
        "residual": rows(residual, old.class_names, names, torch.zeros(len(names), residual.shape[1])),
        "base_text": torch.zeros(len(names), residual.shape[1]), "base_ready": torch.zeros((), dtype=torch.long),
    }


@torch.no_grad()
def _lp_plus_plus_rows(old: Any, new: Any, names: list[str]) -> dict[str, torch.Tensor]:
    alpha = old.alpha.detach()
    return {
        "weight": rows(old.weight, old.class_names, names, torch.zeros(len(names), old.weight.shape[1])),
        "bias": rows(old.bias, old.class_names, names, torch.zeros(len(names))),
        "alpha": rows(alpha, old.class_names, names, alpha.float().mean().expand(len(names)).cpu()),
    }


def _refuse_unseen(old: Any, names: list[str]) -> Any:
    unseen = [n for n in names if n not in old.class_names]
    raise ConfigError(
        f"{type(old).__name__} has no text side: it cannot score classes it was not trained on ({unseen[:3]}...); "
        "evaluate it on a subset of its classes, or use a CLIP method for base-to-novel / cross-dataset transfer"
    )


# registry name -> rule (module docstring's table); tests/test_base2novel.py: every registered method has one
RETARGET: dict[str, Rule] = {
    "CLIPZeroShot": Rule((), "zero-shot, as any class"),
    "CoOp": Rule((), "the learned unified context with the new class name (class-specific context: error)",
                 check=_no_class_specific_context, refresh=_prompt_embeddings),
    "CoCoOp": Rule((), "the learned context and meta-net with the new class name", refresh=_prompt_embeddings),
    "CLIPAdapter": Rule((), "the adapted image feature against the new class's zero-shot text"),
    "ContrastiveFineTune": Rule((), "the fine-tuned towers' text of the new class's prompts"),
    "PEFTFineTune": Rule((), "the fine-tuned towers' (adapters') text of the new class's prompts"),
    "TipAdapter": Rule(("cache_values",), "a zero cache column: no keys there, so the class reads as zero-shot",
                       rebuild=_tip_values),
    "CLAP": Rule(("weight", "penalty"), "its weight starts at its text anchor (zero-shot), penalty 0", rebuild=_clap_rows),
    "LinearHeadFineTune": Rule(("head.weight", "head.bias"),
                               "exp(logit_scale) * its class text (the zero-shot head) on the fine-tuned image tower",
                               rebuild=_zeroshot_head_rows),
    "CLIPLinearProbe": Rule(("head.weight", "head.bias"),
                            "no weights: a subset keeps its rows, any other list is scored by the zero-shot "
                            "classifier of the probe's frozen backbone (CLIPZeroShot)",
                            rebuild=_head_rows("head"), fallback=_probe_zeroshot),
    "CNNTransfer": Rule(("head.1.weight", "head.1.bias"), "none: a subset keeps its rows, other classes are refused",
                        rebuild=_head_rows("head.1"), fallback=_refuse_unseen),
    "KgCoOp": Rule((), "as CoOp: the learned unified context with the new class name",
                   check=_no_class_specific_context, refresh=_prompt_embeddings),
    "TaskRes": Rule(("residual", "base_text", "base_ready"), "residual 0 on its text classifier: zero-shot",
                    rebuild=_taskres_rows),
    "LPPlusPlus": Rule(("weight", "bias", "alpha"), "W = 0, b = 0, alpha the trained classes' mean: its text logits",
                       rebuild=_lp_plus_plus_rows),
    "CLIPSVD": Rule((), "the tuned towers' text of the new class's prompts"),
    "ProLIP": Rule((), "the tuned image projection against the new class's zero-shot text"),
    "NormBiasTuning": Rule((), "the tuned towers' (norms' / biases') text of the new class's prompts"),
    "MaPLe": Rule((), "the learned text and image prompts with the new class name", refresh=_prompt_embeddings),
    "PromptSRC": Rule((), "the learned text and image prompts with the new class name", refresh=_prompt_embeddings),
}


def method_name(module: Any) -> str:
    """The registry name of ``module``'s class (its row in :data:`RETARGET`)."""
    from clipft import registry

    cls = type(module)
    entry = registry.find_path(f"{cls.__module__}.{cls.__qualname__}", ["method"])
    return entry.name if entry is not None else cls.__name__


def rule_for(module: Any) -> Rule:
    name = method_name(module)
    if name not in RETARGET:
        raise ConfigError(
            f"{name} does not declare how it scores other classes (clipft.methods.retarget.RETARGET has no row "
            "for it): base-to-novel and cross-dataset evaluation need one"
        )
    return RETARGET[name]


def retarget(module: Any, class_names: Sequence[str]) -> Any:
    """``module`` for ``class_names``: the same class rebuilt from its hyper-parameters, every class-free state
    entry loaded, the class-indexed ones rebuilt (:data:`RETARGET`); ``module`` itself is left unchanged."""
    names = [str(n) for n in class_names]
    rule = rule_for(module)
    if rule.check is not None:
        rule.check(module, names)
    if rule.fallback is not None and any(n not in module.class_names for n in names):
        new = rule.fallback(module, names)
    else:
        new = _rebuild(module, names, rule)
    new.checkpoint_meta = getattr(module, "checkpoint_meta", None)
    return new.to(module.device).train(module.training)


def _rebuild(module: Any, names: list[str], rule: Rule) -> Any:
    with torch.random.fork_rng(devices=[]):  # a random initialisation (then overwritten) leaves the run's RNG alone
        new = type(module)(**{**dict(module.hparams), "class_names": names})
    state = {k: v for k, v in module.state_dict().items() if k not in rule.class_state}
    missing, unexpected = new.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in rule.class_state]
    if missing or unexpected:
        raise RuntimeError(
            f"retarget({type(module).__name__}): state entries {sorted(missing + list(unexpected))[:5]} do not carry over; "
            "update its row in clipft.methods.retarget.RETARGET (class_state)"
        )
    if rule.refresh is not None:
        rule.refresh(new)
    if rule.rebuild is not None:  # a whole state dict: a partial one would trip the methods' old-checkpoint shims
        new.load_state_dict({**new.state_dict(), **rule.rebuild(module, new, names)}, strict=True)
    return new
