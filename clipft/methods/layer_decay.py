"""Layer-wise learning-rate decay (LLRD): deeper layers keep larger LRs, early layers move less.

A parameter's depth is read from its name: the block index after ``layers.``/``layer.``/
``blocks.``/``resblocks.``/``features.`` (HF CLIP, BERT, timm ViTs, open_clip, torchvision
CNNs); embeddings sit at depth 0 and everything after the last block (final norm,
projection) at the top. The LR scale of depth ``d`` out of ``n`` is ``decay ** (n - d)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|blocks|resblocks|features)\.(\d+)\.")
_EMBEDDING_HINTS = ("embed", "cls_token", "class_embedding", "pos_embed", "positional_embedding", "conv1", "patch")


def parameter_depth(name: str) -> int | None:
    """Block index + 1 for block parameters, 0 for embeddings, ``None`` for the head side."""
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    if any(h in name for h in _EMBEDDING_HINTS):
        return 0
    return None


def layer_decay_groups(
    named: Iterable[tuple[str, nn.Parameter]], decay: float
) -> dict[str, tuple[float, list[tuple[str, nn.Parameter]]]]:
    """``{"depth<k>": (lr_scale, named_params)}`` for one tower."""
    named = list(named)
    depths = [parameter_depth(n) for n, _ in named]
    top = max([d for d in depths if d is not None], default=0) + 1
    groups: dict[str, tuple[float, list[tuple[str, nn.Parameter]]]] = {}
    for (name, param), depth in zip(named, depths):
        d = top if depth is None else depth
        key = f"depth{d:02d}"
        if key not in groups:
            groups[key] = (float(decay) ** (top - d), [])
        groups[key][1].append((name, param))
    return groups
