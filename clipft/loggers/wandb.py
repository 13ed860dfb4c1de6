"""Lightning's W&B logger, with names a sweep can tell apart and a ``:best`` alias that means best.

- **Name**: ``run_name`` plus the run's command-line overrides (``lr=0.001,seed=1``; Hydra's
  ``override_dirname``, see ``conf/logger/wandb.yaml``). In a multirun only the swept keys are named
  (``sign_clip58:model.optimizer.lr=0.001``): what tells the sweep's runs apart, not what they share.
  The swept keys are the sweep's overrides with sweep syntax (``a=1,2``, ``range(..)``, ``choice(..)``,
  from the sweep's ``multirun.yaml``) and the sweeper's ``params`` (Optuna, ``hparams_search``).
- **Config once**: clipft logs the whole run config (the model under ``model``); Lightning then logs
  the module's constructor arguments, which are that same ``model`` section, again at the top level.
  Those repeats are dropped; anything else logged later (``lr_finder/lr``) goes through.
- **Checkpoint aliases**: with ``log_model=true`` Lightning uploads the files of every
  ``ModelCheckpoint`` and tags each callback's ``best_model_path`` ``best``. clipft keeps two
  callbacks (``model_checkpoint`` monitors val, ``last_checkpoint`` monitors nothing), and the
  unmonitored one's "best" is simply its last file, so ``:best`` could end on ``last.ckpt``.
  Here only a monitored callback's best file gets ``best``; every upload gets ``latest``.
"""

from __future__ import annotations

import logging
import sys
from argparse import Namespace
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from torch import Tensor

from clipft.utils.file_gate import read_yaml_mapping

log = logging.getLogger(__name__)

MAX_NAME = 512  # W&B shows long names truncated in tables; the full name stays in the run's overview


def run_label(name: str | None, overrides: str | None) -> str | None:
    """``name:overrides`` (``sign_clip58:model.optimizer.lr=0.001,seed=1``), at most :data:`MAX_NAME` characters."""
    if not overrides:
        return name
    label = f"{name}:{overrides}" if name else str(overrides)
    return label if len(label) <= MAX_NAME else label[: MAX_NAME - 1] + "…"


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def swept_overrides(task: Sequence[str], keys: Iterable[str]) -> str:
    """The job's overrides whose key was swept, joined as Hydra's ``override_dirname`` joins them."""
    keys = {k.lstrip("+~") for k in keys}
    return ",".join(str(o) for o in task if _key(str(o)) in keys)


def sweep_keys_of(overrides: Sequence[str], params: Mapping[str, Any] | None = None) -> set[str]:
    """Keys a sweep varies: overrides with sweep syntax (``a=1,2``, ``range()``, ``choice()``, ``glob()``)
    plus the sweeper's ``params`` (a config-defined search)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = {str(k).lstrip("+~") for k in (params or {})}
    parser = OverridesParser.create()
    for text in overrides:
        try:
            override = parser.parse_override(str(text))
        except Exception:  # noqa: BLE001 - not an override Hydra would take; it swept nothing
            continue
        if override.is_sweep_override():
            keys.add(override.get_key_element().lstrip("+~"))
    return keys


def multirun_sweep() -> tuple[set[str], list[str]] | None:
    """``(swept keys, this job's overrides)`` inside a Hydra multirun job; None in a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        hydra_cfg = HydraConfig.get()
    except Exception:  # noqa: BLE001 - no Hydra context (library use)
        return None

    node = hydra_cfg.sweeper.get("params")
    params = {str(k): None for k in node} if node is not None else {}
    # the sweep as typed: multirun.yaml in the sweep folder (written before any job, for every launcher)
    record = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    sweep_args: list[str] = sys.argv[1:]
    if record.is_file():
        try:
            sweep_args = [str(a) for a in read_yaml_mapping(record, ValueError)["hydra"]["overrides"]["task"]]
        except Exception as exc:  # noqa: BLE001 - unreadable: the command line is the same sweep
            log.debug("could not read %s (%s): the sweep's keys are taken from the command line", record, exc)
    return sweep_keys_of(sweep_args, params), [str(o) for o in hydra_cfg.overrides.task]


class WandbLogger(LightningWandbLogger):
    """``lightning.pytorch.loggers.WandbLogger`` plus ``overrides`` (appended to ``name``; in a multirun
    only the swept ones), the run config logged once, and honest aliases."""

    def __init__(self, *args: Any, name: str | None = None, overrides: str | None = None, **kwargs: Any) -> None:
        sweep = multirun_sweep()
        if sweep is not None and sweep[0]:
            overrides = swept_overrides(sweep[1], sweep[0])
        super().__init__(*args, name=run_label(name, overrides), **kwargs)
        self._model_keys: set[str] | None = None  # the run config's model section, once logged

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        params = dict(vars(params) if isinstance(params, Namespace) else params)
        if self._model_keys is not None:  # Lightning's module hparams: the model section again, top level
            params = {k: v for k, v in params.items() if k not in self._model_keys}
            if not params:
                return
        elif isinstance(params.get("model"), Mapping) and "trainer" in params:  # clipft's run config
            self._model_keys = set(params["model"])
        super().log_hyperparams(params, *args, **kwargs)

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
