"""The zero-shot classifier head every CLIP-style module shares.

A class's text weight is the **mean of its per-prompt L2-normalised text embeddings,
renormalised** (as in WiSE-FT and FLYP). open_clip's ``build_zero_shot_classifier`` does the
same; the original CLIP notebook normalises each prompt embedding too. Normalising before
averaging gives every prompt the same vote whatever its embedding norm, so one long
description cannot dominate a template ensemble. The head is computed once per evaluation
epoch (or once, for frozen text towers), never per batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

TEXT_BATCH = 256


def encode_texts(backbone: Any, texts: Sequence[str], device: torch.device | str, batch_size: int = TEXT_BATCH) -> torch.Tensor:
    """Normalised text embeddings of ``texts`` (with gradients if the caller has them enabled)."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = backbone.tokenize(list(texts[start : start + batch_size]), device=device)
        chunks.append(backbone.encode_text(**tokens))
    return torch.cat(chunks)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` within the block, every submodule's own mode back after it.

    Hand-written: torch has no scoped ``eval()``, and ``module.train()`` afterwards would wake
    towers that were locked in eval mode (their own ``train`` overrides keep them so).
    """
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, mode in modes:
            sub.training = mode


@torch.no_grad()
def zeroshot_weights(
    backbone: Any, per_class_prompts: Sequence[Sequence[str]], device: torch.device | str, batch_size: int = TEXT_BATCH
) -> torch.Tensor:
    """``(num_classes, dim)``: per class, the renormalised mean of its normalised prompt embeddings.

    A fixed classifier, so the text tower runs in eval mode whatever mode the caller is in: a head
    built at ``on_fit_start`` (the module still in train mode) would otherwise carry one draw of
    the text tower's dropout noise for the whole run.
    """
    flat = [p for prompts in per_class_prompts for p in prompts]
    with eval_mode(backbone):
        return class_means(encode_texts(backbone, flat, device, batch_size), [len(p) for p in per_class_prompts])


def class_means(prompt_features: torch.Tensor, prompts_per_class: Sequence[int]) -> torch.Tensor:
    """Normalise each prompt embedding, average each class's consecutive run, renormalise."""
    feats = nn.functional.normalize(prompt_features.float(), dim=-1)
    rows = [nn.functional.normalize(chunk.mean(0), dim=-1) for chunk in feats.split(list(prompts_per_class))]
    return torch.stack(rows)


@torch.no_grad()
def raw_class_text(backbone: Any, per_class_prompts: Sequence[Sequence[str]], device: torch.device | str) -> torch.Tensor:
    """``(classes, dim)``: per class, the mean of its *unnormalised* prompt embeddings (CLAP's and TaskRes's
    references' base text features, whose scale is the text tower's, not the unit sphere's)."""
    rows = []
    with eval_mode(backbone):
        for prompts in per_class_prompts:
            chunks = []
            for start in range(0, len(prompts), TEXT_BATCH):
                tokens = backbone.tokenize(list(prompts[start : start + TEXT_BATCH]), device=device)
                chunks.append(backbone.encode_text(**tokens, normalize=False).float())
            rows.append(torch.cat(chunks).mean(0))
    return torch.stack(rows)
