"""Stop a run at the first NaN/Inf loss, before it reaches the weights or any checkpoint.

A non-finite loss is raised as :class:`NonFiniteLossError` in ``on_before_backward``: the
optimizer never steps on it and no checkpoint is written after it, so ``last.ckpt`` / ``best.ckpt``
keep the last good weights; the message says where they are and which knobs to turn.

Reading the loss's finiteness on the host is a device sync. On CPU it costs nothing, so every
step is checked. On an accelerator the check runs every ``check_every_n_steps`` (default: the
trainer's ``log_every_n_steps``); in between, a flag accumulates on the device with no sync, so a
NaN is still caught at the next check, but the steps since the last check may have reached the
weights (the message then says so). ``check_every_n_steps=1`` restores the per-step guarantee.
"""

from __future__ import annotations

import lightning as L
import torch

from clipft.errors import ClipftError


class NonFiniteLossError(ClipftError):
    """The training loss became NaN or Inf."""


class NanGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` when the training loss is not finite.

    Args:
        check_every_n_steps: host check period; ``None``: 1 on CPU, ``trainer.log_every_n_steps`` elsewhere.
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        if check_every_n_steps is not None and int(check_every_n_steps) < 1:
            raise ValueError(f"callbacks.nan_guard.check_every_n_steps must be >= 1 or null, got {check_every_n_steps!r}")
        self.check_every_n_steps = check_every_n_steps
        self._bad: torch.Tensor | None = None  # accumulated on the device between checks

    def _period(self, trainer: L.Trainer, loss: torch.Tensor) -> int:
        if self.check_every_n_steps is not None:
            return int(self.check_every_n_steps)
        return 1 if loss.device.type == "cpu" else max(1, int(trainer.log_every_n_steps))

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        period = self._period(trainer, loss)
        if period > 1:
            self._bad = ~finite if self._bad is None else self._bad | ~finite
            if (trainer.global_step + 1) % period:
                return  # no host sync on this step
            bad, self._bad = bool(self._bad), None
            if not bad:
                return
        elif bool(finite):
            return
        if period == 1:
            value = loss.detach().float().cpu()
            value = value.item() if value.numel() == 1 else value.tolist()
            what = f"training loss is {value} at epoch {trainer.current_epoch}, step {trainer.global_step}; stopped before it reached the weights."
        else:
            first = trainer.global_step + 1 - period
            what = (
                f"a training loss of steps {first}-{trainer.global_step} (epoch {trainer.current_epoch}) was NaN/Inf; "
                f"checked every {period} steps, so those steps may have reached the weights "
                "(callbacks.nan_guard.check_every_n_steps=1 checks each)."
            )
        raise NonFiniteLossError(
            f"{what} {last_good_checkpoint(trainer)} "
            "Try a lower model.optimizer.lr, trainer.gradient_clip_val=1.0, or trainer.precision=32-true."
        )


def last_good_checkpoint(trainer: L.Trainer) -> str:
    paths = [getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "") for cb in trainer.checkpoint_callbacks]
    paths = [p for p in paths if p]
    path = next((p for p in paths if p.endswith("last.ckpt")), paths[0] if paths else "")
    if path:
        return f"The last good checkpoint is {path} (resume with ckpt_path=last after fixing the config)."
    return "No checkpoint had been written yet."
