"""Tokenise a prompt list once and keep the tokens on the device, instead of once per training step.

FLYP encodes the class prompts with gradients every step. Tokenising them on the host and
copying them to the accelerator every step costs host time and a host-to-device copy that
the GPU waits on; the prompts only change when ``train_prompt: random`` draws new ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch


class PromptTokenCache:
    """``get(backbone, prompts, device)`` -> ``backbone.tokenize(prompts)`` on ``device``, memoised.

    Keyed by the exact prompt tuple and device, least-recently-used entries dropped beyond
    ``max_entries`` (``train_prompt: random`` makes a new list most steps).
    """

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = int(max_entries)
        self._entries: OrderedDict[tuple[Any, ...], dict[str, torch.Tensor]] = OrderedDict()
        self.misses = 0

    def get(self, backbone: Any, prompts: Sequence[str], device: torch.device | str) -> dict[str, torch.Tensor]:
        key = (id(backbone), str(device), tuple(prompts))
        tokens = self._entries.get(key)
        if tokens is None:
            self.misses += 1
            tokens = backbone.tokenize(list(prompts), device=device)
            self._entries[key] = tokens
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return tokens

    def clear(self) -> None:
        self._entries.clear()
