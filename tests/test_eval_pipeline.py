"""One evaluation pipeline: every option on every split, old checkpoints, errors that say where."""

from __future__ import annotations

import pytest
import torch
from conftest import compose
from eval_helpers import colour_data_overrides
from omegaconf import open_dict
from PIL import Image

from clipft.errors import ConfigError
from clipft.methods import ContrastiveFineTune, LinearHeadFineTune
from clipft.methods.loading import load_module


def _evaluate(overrides, root):
    from clipft.pipeline.evaluate import run_eval

    cfg = compose(overrides, config_name="eval", root=root)
    with open_dict(cfg):
        del cfg["hydra"]
    return run_eval(cfg)


def test_eval_on_val_honours_calibrate_gradcam_and_template_sets(colour_run, tmp_path):
    metrics = _evaluate(
        [f"ckpt_path={colour_run['ckpt']}", *colour_data_overrides(colour_run["data"]), "split=val",
         "calibrate=true", "gradcam.n=4", "zeroshot.template_sets=[blurry]", "logger=none"],
        tmp_path,
    )
    out = tmp_path / "run"
    n_val = metrics["data"]["val"]
    assert metrics["split"] == "val" and metrics["val"]["num_samples"] == n_val and "test" not in metrics
    assert set(metrics["summary"]) >= {"val_accuracy", "val_macro_f1", "val_ece", "val_per_class_accuracy"}
    # the sweep ran on val, and the report, calibration and figures still describe the checkpoint's own prompts
    assert metrics["zeroshot"]["blurry"]["num_templates"] > 0
    cal = metrics["calibration"]
    assert cal["temperature"] > 0 and metrics["summary"]["val_ece_calibrated"] == cal["val"]["ece_after"]
    assert "optimistic" in cal["note"]
    for name in ("gradcam_grid", "reliability", "confusion_matrix"):
        with Image.open(out / "plots" / f"{name}.png") as im:
            im.verify()
    errors = (out / "errors.csv").read_text().splitlines()  # the val split's mistakes, by file
    assert errors[0].startswith("path,") and all("/train/" in row for row in errors[1:])
    assert metrics["artefacts"]["errors"] == "errors.csv"


def _old_style_checkpoint(module, path, head: str):
    """What clipft 0.1 wrote: the flag-driven CLIPFineTune under clipft.modules."""
    hparams = dict(module.hparams)
    hparams.update(head=head, sim_weight=0.0 if head == "linear" else 1.0, cls_weight=1.0,
                   contrastive_target="multi_positive", freeze_text_tower=head == "linear", init_head_from="zeroshot")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "clipft": {"module": "clipft.modules.clip_finetune.CLIPFineTune"}}, path)
    return path


@pytest.mark.parametrize("head, cls", [("text", ContrastiveFineTune), ("linear", LinearHeadFineTune)])
def test_clipft_0_1_checkpoints_load_as_todays_methods_with_equal_logits(tiny_clip_dir, tmp_path, head, cls):
    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    opt = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
    module = cls(["a", "b", "c"], clip=clip, optimizer=opt).eval()
    module.prepare_for_inference()
    loaded = load_module(_old_style_checkpoint(module, tmp_path / "old.ckpt", head))
    assert type(loaded) is cls
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x))


def test_a_nested_config_error_names_where_the_object_sits(tiny_clip_dir):
    from clipft.pipeline.building import build_model

    cfg = compose(["model=clip_zeroshot", "model.clip._target_=clipft.models.HFCLIPBackbone",
                   f"+model.ensemble=[{{clip:{{_target_:clipft.models.HFCLIPBackbone,name_or_path:{tiny_clip_dir}}}}},"
                   "{clip:{_target_:clipft.models.HFCLIPBackbone,config:{},image_size:0}}]"])
    with pytest.raises(ConfigError, match=r"^model\.ensemble\[1\]\.clip: image_size=0 is not allowed"):
        build_model(cfg, ["a", "b"])
    with pytest.raises(ConfigError, match=r"^clip: image_size=0"):  # library use: the path the caller knows
        ContrastiveFineTune(["a", "b"], clip={"_target_": "clipft.models.HFCLIPBackbone", "config": {}, "image_size": 0},
                            optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3})
