"""Every option of every config group composes with train.yaml and resolves."""

from __future__ import annotations

import pytest
from conftest import CONF_DIR, compose
from omegaconf import OmegaConf, open_dict

GROUPS = ["data", "model", "trainer", "callbacks", "logger", "paths", "hydra"]
# options that need a user value (a `???`) get one here so they resolve
REQUIRED = {("data", "folder"): ["data.root=/tmp/some/folder"], ("data", "streaming"): ["data.input_dir=/tmp/some/stream"]}


def _options():
    for group in GROUPS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            yield group, path.stem


@pytest.mark.parametrize(("group", "option"), list(_options()))
def test_every_group_option_composes(group, option, tmp_path):
    overrides = [] if group in ("paths", "hydra") else [f"{group}={option}"]
    overrides += REQUIRED.get((group, option), [])
    cfg = compose(overrides, root=tmp_path)
    hydra_node = OmegaConf.to_container(cfg.hydra, resolve=False)
    assert hydra_node["run"]["dir"].startswith("${paths.log_dir}/${run_name}/")
    with open_dict(cfg):
        del cfg.hydra  # its sweep keys only resolve inside a multirun
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert plain["paths"]["root_dir"] == str(tmp_path)
    if group in ("data", "model", "trainer"):
        assert "_target_" in plain[group], f"{group}={option} has no _target_"


def test_defaults_are_the_embedded_demo(tmp_path):
    cfg = compose([], root=tmp_path)
    assert cfg.data._target_ == "clipft.data.SyntheticSignsDataModule"
    assert cfg.model._target_ == "clipft.methods.ContrastiveFineTune"
    assert cfg.model.clip.name_or_path is None  # tiny random CLIP: no download
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfg.trainer.precision == "auto"
    assert cfg.get("experiment") is None


def test_real_clip_model_defaults_to_openai_vit_b32(tmp_path):
    cfg = compose(["model=clip_flyp"], root=tmp_path)
    assert cfg.model.clip.name_or_path == "openai/clip-vit-base-patch32"
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW"
    assert list(cfg.model.optimizer.betas) == [0.9, 0.98]


def test_precision_auto_is_fp32_on_cpu():
    from clipft.pipeline.building import resolve_precision

    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "gpu") == "bf16-mixed"


def test_constructor_errors_surface_as_clipft_errors_not_hydra_wrappers(tmp_path):
    """A bad value only the datamodule / module constructor can judge is still one clear ConfigError."""
    from clipft.errors import ConfigError
    from clipft.pipeline.building import build_datamodule, build_model

    cfg = compose(["data=traffic_signs", f"data.root={tmp_path}", "data.dedupe=yes"], root=tmp_path)
    with pytest.raises(ConfigError, match="data.dedupe"):
        build_datamodule(cfg)
    cfg = compose(["model.contrastive_target=nope"], root=tmp_path)
    with pytest.raises(ConfigError, match="contrastive_target"):
        build_model(cfg, ["a", "b"])
