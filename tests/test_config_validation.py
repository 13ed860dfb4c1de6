"""Bad config values are one clear line naming the key, the value and what is allowed, raised
before any data or model is built."""

from __future__ import annotations

import pytest
from conftest import FAST, compose, run_script
from hydra.errors import MissingConfigException

from clipft.errors import CheckpointError, ConfigError
from clipft.pipeline.validation import validate_config

BAD_VALUES = [
    (["model.optimizer.lr=-0.001"], r"model\.optimizer\.lr=-0\.001 .*positive number"),
    (["model.optimizer.lr=0"], r"model\.optimizer\.lr=0 .*positive number"),
    (["data.batch_size=0"], r"data\.batch_size=0 .*integer >= 1"),
    (["data.batch_size=2.5"], r"data\.batch_size=2\.5 .*integer >= 1"),
    (["model.sim_weight=0", "model.cls_weight=0"], r"model\.sim_weight=0 \+ cls_weight=0 is 0"),
    (["model.sim_weight=-1"], r"model\.sim_weight=-1 .*>= 0"),
    (["model.label_smoothing=1.5"], r"model\.label_smoothing=1\.5 .*\[0, 1\)"),
    (["trainer.max_epochs=0"], r"trainer\.max_epochs=0 .*integer >= 1"),
    (["trainer.accumulate_grad_batches=0"], r"trainer\.accumulate_grad_batches=0"),
    (["trainer.precision=17"], r"trainer\.precision=17 .*one of"),
    (["data.val_fraction=1.0"], r"data\.val_fraction=1\.0 .*\[0, 1\)"),
    (["model.prompts.descriptions=no/such/file.yaml"], r"model\.prompts\.descriptions='no/such/file\.yaml' does not exist"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_values_name_key_value_and_allowed(overrides, message, tmp_path):
    cfg = compose(overrides, root=tmp_path)
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(cfg, "train")
    assert "\n" not in str(info.value)


def test_defaults_are_valid(tmp_path):
    validate_config(compose([], root=tmp_path), "train")
    validate_config(compose(["model=clip_flyp", "trainer=gpu"], root=tmp_path), "train")


@pytest.mark.parametrize(
    ("overrides", "key"), [(["experiment=exp3"], "init_from"), (["ckpt_path=???"], "ckpt_path")]
)
def test_missing_required_path_names_the_key(overrides, key, tmp_path):
    cfg = compose(overrides, root=tmp_path)
    with pytest.raises(ConfigError, match=rf"^{key} is required but not set \(\?\?\?\): pass .*{key}=.*best\.ckpt"):
        validate_config(cfg, "train")


def test_eval_with_missing_checkpoint_file(tmp_path):
    cfg = compose([f"ckpt_path={tmp_path / 'nope.ckpt'}"], config_name="eval", root=tmp_path)
    with pytest.raises(CheckpointError, match=r"nope\.ckpt' does not exist"):
        validate_config(cfg, "eval")


def test_run_train_fails_before_building_anything(tmp_path, monkeypatch):
    import clipft.pipeline.train as train_pipeline

    def must_not_build(*args, **kwargs):
        raise AssertionError("validation must come before the datamodule is built")

    monkeypatch.setattr(train_pipeline, "build_datamodule", must_not_build)
    cfg = compose(["model.optimizer.lr=-1"], root=tmp_path)
    with pytest.raises(ConfigError, match="model.optimizer.lr=-1"):
        train_pipeline.run_train(cfg)
    assert not (tmp_path / "run").exists()  # not even the run directory


@pytest.mark.parametrize(("group", "option", "listed"), [("model", "clip_huge", "clip_tiny"), ("data", "imagenet9", "synthetic_signs")])
def test_unknown_group_option_lists_the_available_ones(group, option, listed, tmp_path):
    with pytest.raises(MissingConfigException) as info:
        compose([f"{group}={option}"], root=tmp_path)
    message = str(info.value)
    assert f"{group}/{option}" in message and "Available options" in message and listed in message


def test_cli_prints_one_line_and_exits_1(tmp_path):
    result = run_script("train.py", [*FAST, "data.batch_size=0"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipft error:")]
    assert errors == ["clipft error: data.batch_size=0 is not allowed: expected an integer >= 1"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs").glob("*/*/checkpoints"))


def test_model_values_are_checked_by_the_model_class_only():
    """Each value is checked once, where it is owned: no model key in the pipeline's rules, and the
    model class's own check (run on the config before the data scan) names the key as the config does."""
    from clipft.pipeline.validation import RULES

    assert not [rule.key for rule in RULES if rule.key.startswith(("model.", "data."))]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.eval_batch_size=0"], r"^data\.eval_batch_size=0 is not allowed: expected an integer >= 1 or null"),
        (["data.num_workers=-1"], r"^data\.num_workers=-1 is not allowed: expected an integer >= 0"),
        (["data.val_fraction=1.5"], r"^data\.val_fraction=1\.5 is not allowed: expected a number in \[0, 1\)"),
        (["data.dedupe=maybe"], r"^data\.dedupe='maybe' is not allowed; choose one of"),
    ],
)
def test_data_values_are_checked_once_by_the_datamodule_class(overrides, message, tmp_path):
    """The pipeline runs the datamodule class's own check on the ``data`` node; the constructor runs the same one."""
    from clipft.data import SyntheticSignsDataModule

    with pytest.raises(ConfigError, match=message):
        validate_config(compose(overrides, root=tmp_path), "train")
    key, value = overrides[0].split("=")
    value = {"0": 0, "-1": -1, "1.5": 1.5}.get(value, value)
    with pytest.raises(ConfigError, match=message):
        SyntheticSignsDataModule(root=str(tmp_path / "s"), **{key.split(".")[1]: value})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=cnn_transfer", "model.head_dropout=1.0"], r"^model\.head_dropout=1\.0 is not allowed"),
        (["model=clip_flyp", "model.optimizer.weight_decay=-1"], r"^model\.optimizer\.weight_decay=-1 is not allowed"),
        (["model=clip_flyp", "model.cls_weight=-2"], r"^model\.cls_weight=-2 is not allowed: expected a number >= 0"),
    ],
)
def test_model_checks_run_before_anything_is_built(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(compose(overrides, root=tmp_path), "train")
    assert "\n" not in str(info.value)
