"""Lightning's W&B logger, with names a sweep can tell apart and a ``:best`` alias that means best.

- **Name**: ``run_name`` plus the job's command-line overrides (``lr=0.001,seed=1``), so the runs of
  one ``-m`` sweep differ in the W&B table (Hydra's ``override_dirname``; see ``conf/logger/wandb.yaml``).
- **Checkpoint aliases**: with ``log_model=true`` Lightning uploads the files of every
  ``ModelCheckpoint`` and tags each callback's ``best_model_path`` ``best``. clipft keeps two
  callbacks (``model_checkpoint`` monitors val, ``last_checkpoint`` monitors nothing), and the
  unmonitored one's "best" is simply its last file, so ``:best`` could end on ``last.ckpt``.
  Here only a monitored callback's best file gets ``best``; every upload gets ``latest``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from torch import Tensor

MAX_NAME = 512  # W&B shows long names truncated in tables; the full name stays in the run's overview


def run_label(name: str | None, overrides: str | None) -> str | None:
    """``name:overrides`` (``sign_clip58:model.optimizer.lr=0.001,seed=1``), at most :data:`MAX_NAME` characters."""
    if not overrides:
        return name
    label = f"{name}:{overrides}" if name else str(overrides)
    return label if len(label) <= MAX_NAME else label[: MAX_NAME - 1] + "…"


class WandbLogger(LightningWandbLogger):
    """``lightning.pytorch.loggers.WandbLogger`` plus ``overrides`` (appended to ``name``) and honest aliases."""

    def __init__(self, *args: Any, name: str | None = None, overrides: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, name=run_label(name, overrides), **kwargs)

    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        # Lightning's version of this hook tags any callback's best_model_path "best" (see the module docstring)
        import wandb
        from lightning.pytorch.loggers.utilities import _scan_checkpoints

        monitored = getattr(checkpoint_callback, "monitor", None) is not None
        for mtime, path, score, _tag in _scan_checkpoints(checkpoint_callback, self._logged_model_time):
            metadata = {
                "score": score.item() if isinstance(score, Tensor) else score,
                "original_filename": Path(path).name,
                "monitor": getattr(checkpoint_callback, "monitor", None),
                "mode": getattr(checkpoint_callback, "mode", None),
            }
            if not self._checkpoint_name:
                self._checkpoint_name = f"model-{self.experiment.id}"
            artifact = wandb.Artifact(name=self._checkpoint_name, type="model", metadata=metadata)
            artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
            best = monitored and path == checkpoint_callback.best_model_path
            self.experiment.log_artifact(artifact, aliases=["latest", "best"] if best else ["latest"])
            self._logged_model_time[path] = mtime
