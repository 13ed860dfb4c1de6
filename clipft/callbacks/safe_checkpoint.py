"""A ``ModelCheckpoint`` whose restored bookkeeping cannot point outside its own folder.

Lightning restores ``best_model_path`` (and, in an unchanged folder, ``best_k_models`` and
``last_model_path``) from the checkpoint being resumed. The pipeline then tests that best
path, and top-k pruning deletes the files named there. A crafted ``last.ckpt`` could thus make
a resumed run load, or delete, any file. Here every restored path must lie inside this
callback's ``dirpath``; other paths are dropped with a warning, as if never recorded.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from clipft.utils.paths import is_inside

log = logging.getLogger(__name__)

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class SafeModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that ignores restored paths outside ``dirpath``."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        folder = self.dirpath
        if folder is None:
            return super().load_state_dict(state)
        for key in PATH_KEYS:
            value = state.get(key)
            if value and not is_inside(str(value), folder):
                log.warning("ignoring the resumed checkpoint's %s=%r: it lies outside %s", key, value, folder)
                state[key] = ""
        if isinstance(state.get("best_k_models"), dict):
            kept = {k: v for k, v in state["best_k_models"].items() if is_inside(str(k), folder)}
            if len(kept) != len(state["best_k_models"]):
                log.warning("ignoring %d resumed top-k paths outside %s", len(state["best_k_models"]) - len(kept), folder)
            state["best_k_models"] = kept
        super().load_state_dict(state)
