"""``eval.py ckpt_path=...`` without ``data=``: evaluate on the data the checkpoint's run trained on.

A checkpoint sits in ``<run>/checkpoints/``; the run wrote its resolved config to ``<run>/config.yaml``.
Unless the command line chooses the data (``data=...`` or ``experiment=...``), its ``data`` node
replaces the composed default, and the command line's ``data.*`` overrides are applied on top
(``data.batch_size=32``, ``data.root=/moved/here``).

The file is read with ``yaml.safe_load`` and its ``data`` node passes the one gate
(:mod:`clipft.utils.file_gate`): its ``_target_`` names one of clipft's own datamodules and nothing
below it chooses code, so a config file never decides what runs (the rule for checkpoints too).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from clipft.errors import CheckpointError
from clipft.utils.file_gate import gate_file_config, read_yaml_mapping

log = logging.getLogger(__name__)

CHOOSES_DATA = ("data", "experiment")


def known_datamodules() -> set[str]:
    """Every import path of a registered datamodule (clipft.registry kind ``datamodule``: clipft's own,
    ``clipft.data.X`` and the defining module's path, and what ``clipft.plugins`` packages register)."""
    from clipft import registry

    return registry.paths("datamodule")


def gate_data_node(data: Any, source: str, trust: bool = False) -> dict[str, Any]:
    """A ``data`` node read from a file, through the one gate: a clipft datamodule, plain arguments."""
    return gate_file_config(data, source, "datamodule", "data", root_targets=known_datamodules(), trust=trust)


def run_config_of(ckpt_path: str) -> Path | None:
    candidate = Path(ckpt_path).resolve().parent.parent / "config.yaml"
    return candidate if candidate.is_file() else None


def command_line_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def with_data_of_checkpoint_run(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """``cfg`` with the checkpoint's run's ``data`` node, unless the command line chose the data."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        return cfg
    overrides = command_line_overrides() if overrides is None else overrides
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    if any(o.key_or_group.lstrip("+~") in CHOOSES_DATA for o in parsed):
        return cfg
    config_file = run_config_of(str(ckpt_path))
    if config_file is None:
        log.info("no config.yaml beside %s's run: evaluating on the composed data config", ckpt_path)
        return cfg
    run_cfg = read_yaml_mapping(config_file, CheckpointError)
    data = run_cfg.get("data")
    if not isinstance(data, dict):
        return cfg
    # the one gate (clipft.utils.file_gate): a datamodule at the root, nothing that chooses code below it
    gate_data_node(data, str(config_file), trust=bool(cfg.get("trust_checkpoint", False)))
    target = data["_target_"]
    node: Any = OmegaConf.create(data)
    for override in parsed:  # the command line's data.* values on top (deletions are not carried over)
        key = override.key_or_group
        if key.startswith("data.") and not override.is_delete():
            OmegaConf.update(node, key[len("data."):], override.value(), merge=True, force_add=True)
    with open_dict(cfg):
        cfg.data = node
    log.info("data: the checkpoint's run's (%s, %s); choose another with data=...", target.rsplit(".", 1)[-1], config_file)
    return cfg
