"""Hydra x Lightning multi-process launching: which process owns the run directory, and the multirun trap.

``trainer=ddp`` makes Lightning re-launch ``train.py`` once per extra device with
``hydra.run.dir=<this run's dir>``, so every rank composes the same config and writes to one
directory. Only the global-zero process may claim that directory and write run-level files
(``config.yaml``, ``metrics.json``, plots); the children read the ranks Lightning, torchrun or
SLURM put in their environment.

A multirun (``-m``) cannot be re-launched that way: the children would replay the whole sweep.
:func:`check_ddp_launch` turns that into one clear error naming the fixes.
"""

from __future__ import annotations

import os
from typing import Any

from clipft.errors import ConfigError

# set by Lightning's launchers (LOCAL_RANK, NODE_RANK), torchrun (RANK, GROUP_RANK) or srun (SLURM_PROCID)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_global_zero_process() -> bool:
    """True unless the environment says this is a non-zero rank of a distributed launch."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0").strip() or "0"
        if value.isdigit() and int(value) != 0:
            return False
    return True


def _hydra_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        return False
    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN


def relaunches_script(trainer: Any) -> bool:
    """Whether ``trainer.fit`` will start this script again for the other devices (strategy=ddp)."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher as FabricLauncher
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    if not isinstance(launcher, (_SubprocessScriptLauncher, FabricLauncher)):
        return False
    return not trainer.strategy.cluster_environment.creates_processes_externally and trainer.num_devices > 1


def check_ddp_launch(trainer: Any) -> None:
    """Refuse a multirun whose jobs would re-launch ``train.py`` (the Lightning + Hydra multirun trap)."""
    if _hydra_multirun() and relaunches_script(trainer):
        raise ConfigError(
            f"trainer.strategy=ddp with {trainer.num_devices} devices cannot run inside a multirun (-m): "
            "Lightning re-launches train.py for the extra devices and they would replay the whole sweep. "
            "Use trainer=ddp_spawn for multi-device sweep jobs, give each job one device "
            "(trainer.devices=1, e.g. with hydra/launcher=submitit_slurm to run jobs in parallel), "
            "or launch each run on its own without -m."
        )
