"""Class-chunked prompt encoding: prompt learning whose peak memory does not grow with the class count.

CoOp, CoCoOp, KgCoOp, MaPLe and PromptSRC encode every class prompt with gradients every step. In one pass the text
tower's activations for all ``C`` prompts stay alive until backward, so peak memory is ``C`` times a
prompt's activations (on a ViT-B/16-shaped text tower in fp32, 2.9 MiB per 8-token prompt measured,
some 30 MiB per 77-token one): 1,000 classes need tens of GB. :func:`encode_prompts` encodes
``chunk_size`` prompts at a time, each chunk under ``torch.utils.checkpoint.checkpoint(...,
use_reentrant=False)``: forward keeps only each chunk's inputs and outputs, backward recomputes one
chunk at a time, so only one chunk's activations are alive.
The price is one more forward pass of the text tower per step: +50 % of the text side's compute with a
frozen tower (CoOp: forward + input-gradient backward), +33 % when the tower trains; none up to
``chunk_size`` prompts (one plain pass). ``benchmarks/prompt_memory.py`` measures both.

Every chunk runs the tower's own forward on its rows (each prompt is encoded independently: no
operation mixes prompts), so the result equals the single pass up to float summation order
(``tests/test_chunked_prompts.py``: loss and context gradients to 1e-5).

Batching the class prompts is the pattern of open_clip's zero-shot head,
mlfoundations/open_clip @ 67bfcaa (``src/open_clip/zero_shot_classifier.py:21-70``,
``build_zero_shot_classifier(num_classes_per_batch=10)``), which encodes without gradients; here the
chunks also carry gradients, through activation checkpointing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from clipft.errors import ConfigError

DEFAULT_TEXT_CHUNK_SIZE = 128  # up to 128 classes: today's single pass, bit for bit


def check_chunk_size(chunk_size: Any, key: str = "text_chunk_size") -> int | None:
    """``chunk_size`` as an int >= 1, or None (one pass); anything else is a :class:`ConfigError` naming ``key``."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"{key} must be an integer >= 1 (prompts encoded per chunk) or null (all at once), got {chunk_size!r}")
    return int(chunk_size)


def encode_prompts(
    backbone: Any,
    embeddings: torch.Tensor,
    tokens: Mapping[str, torch.Tensor],
    chunk_size: int | None = DEFAULT_TEXT_CHUNK_SIZE,
    normalize: bool = True,
    encode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``backbone.encode_text_embeddings(embeddings, **tokens)``, ``chunk_size`` prompts at a time.

    Args:
        backbone: a :class:`~clipft.models.contract.VisionLanguageBackbone`.
        embeddings: ``(prompts, length, width)`` token embeddings (the learned context written in).
        tokens: ``{input_ids, attention_mask?}``, ``(prompts, length)`` each: the positions the tower pools.
        chunk_size: prompts per chunk; None (or at least the prompt count) is one plain pass.
        normalize: L2-normalise the embeddings, as ``encode_text_embeddings``.
        encode: ``(embeddings, input_ids, mask) -> features`` of one chunk, when the prompts go through another
            path than ``encode_text_embeddings`` (MaPLe / PromptSRC: ``encode_text_deep_prompts`` with the layer
            prompts every class shares); ``normalize`` is then the callable's business.

    Returns:
        ``(prompts, embed_dim)``, equal to the single pass.
    """
    chunk_size = check_chunk_size(chunk_size)
    input_ids, mask = tokens["input_ids"], tokens.get("attention_mask")
    count = embeddings.shape[0]
    if input_ids.shape[0] != count or (mask is not None and mask.shape[0] != count):
        raise ValueError(f"{count} prompt embeddings but token ids for {input_ids.shape[0]} prompts")
    if encode is None:
        def encode(part: torch.Tensor, ids: torch.Tensor, part_mask: torch.Tensor | None) -> torch.Tensor:
            return backbone.encode_text_embeddings(part, ids, part_mask, normalize)

    if chunk_size is None or count <= chunk_size:
        return encode(embeddings, input_ids, mask)

    keep_graph = torch.is_grad_enabled() and (embeddings.requires_grad or _any_trainable(backbone))
    outputs = []
    for start in range(0, count, chunk_size):
        part = slice(start, start + chunk_size)
        args = (embeddings[part], input_ids[part], None if mask is None else mask[part])
        outputs.append(checkpoint(encode, *args, use_reentrant=False) if keep_graph else encode(*args))
    return torch.cat(outputs)


def _any_trainable(backbone: Any) -> bool:
    """Whether the text side has a parameter to train (full fine-tuning through chunked prompts)."""
    return any(p.requires_grad for p in [*backbone.text_parameters(), *backbone.projection_parameters()])
