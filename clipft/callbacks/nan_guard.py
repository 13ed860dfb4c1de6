"""Stop a run at the first NaN/Inf loss, before it reaches the weights or any checkpoint.

A non-finite loss is raised as :class:`NonFiniteLossError` in ``on_before_backward``: the
optimizer never steps on it and no checkpoint is written after it, so ``last.ckpt`` / ``best.ckpt``
keep the last good weights; the message says where they are and which knobs to turn.
"""

from __future__ import annotations

import lightning as L
import torch

from clipft.errors import ClipftError


class NonFiniteLossError(ClipftError):
    """The training loss became NaN or Inf."""


class NanGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` when the training loss is not finite."""

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        value = loss.detach().float().cpu()
        value = value.item() if value.numel() == 1 else value.tolist()
        raise NonFiniteLossError(
            f"training loss is {value} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
            f"stopped before it reached the weights. {last_good_checkpoint(trainer)} "
            "Try a lower model.optimizer.lr, trainer.gradient_clip_val=1.0, or trainer.precision=32-true."
        )


def last_good_checkpoint(trainer: L.Trainer) -> str:
    paths = [getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "") for cb in trainer.checkpoint_callbacks]
    paths = [p for p in paths if p]
    path = next((p for p in paths if p.endswith("last.ckpt")), paths[0] if paths else "")
    if path:
        return f"The last good checkpoint is {path} (resume with ckpt_path=last after fixing the config)."
    return "No checkpoint had been written yet."
