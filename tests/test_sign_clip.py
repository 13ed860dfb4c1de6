"""sign-CLIP: the alignment recipe, per-image captions, the exported folder in the zero-shot recipes."""

from __future__ import annotations

import random

import pytest
import torch
from test_experiments import compose_experiment, run_experiment, without_hydra_node

from clipft.prompts import build_prompt_set

TINY_DUAL = ["model.clip.image_tower.pretrained=false", "model.clip.image_size=32", "model.clip.embed_dim=16",
             "data=synthetic_signs", "data.image_size=null", "data.mean=null", "data.std=null",
             "model.prompts.descriptions=class_descriptions/synthetic_signs.yaml"]


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    from clipft.models.towers import save_tiny_text_encoder

    return save_tiny_text_encoder(tmp_path_factory.mktemp("bert"))


def tiny_sign_clip(tiny_text):
    """An untrained dual encoder of sign-CLIP's kind (random MobileNetV2, tiny BERT) to save as a folder."""
    from clipft.models import DualEncoderBackbone

    return DualEncoderBackbone(
        image_tower={"source": "torchvision", "name": "mobilenet_v2", "pretrained": False},
        text_tower={"name_or_path": str(tiny_text), "max_length": 32}, embed_dim=16, image_size=32,
    )


def test_per_image_captions_vary_within_a_class():
    prompts = build_prompt_set(["stop", "yield"], ["a photo of a {} sign.", "a road sign: {}.", "{}"], {"stop": ["a red octagon"], "yield": ["a white triangle"]})
    captions = prompts.captions_for([0] * 40, random.Random(0))
    assert len(captions) == 40 and len(set(captions)) == 4  # 3 templates + 1 description, each drawn
    assert all("stop" in c or "octagon" in c for c in captions)


@pytest.mark.parametrize("name", ["align_gtsrb", "align_signs58"])
def test_alignment_recipes_run_a_short_step_and_export_a_reloadable_folder(name, tmp_path, tiny_text):
    from clipft.cli import export_backbone
    from clipft.models import DualEncoderBackbone

    # the recipe's data.root points at ../shared/data; the synthetic set goes to tmp_path instead
    extra = [*TINY_DUAL, f"model.clip.text_tower.name_or_path={tiny_text}", f"data.root={tmp_path / 'synthetic'}"]
    if name == "align_gtsrb":
        extra.append("~data.download")
    metrics = run_experiment(name, extra, tmp_path)
    assert metrics["config"]["model"]["prompts"]["train_prompt"] == "per_image"
    assert metrics["config"]["model"]["cls_weight"] == 0.0 and metrics["summary"]["best_val_acc"] is not None
    assert export_backbone.main([str(tmp_path / "run" / "checkpoints" / "best.ckpt"), str(tmp_path / "sign_clip")]) == 0
    folder = DualEncoderBackbone(name_or_path=str(tmp_path / "sign_clip")).eval()
    assert folder.preprocessing["image_size"] == 32


def test_zeroshot_recipe_scores_a_sign_clip_folder(tmp_path, tiny_text):
    from clipft.models.backbone_folder import save_backbone_folder
    from clipft.pipeline.evaluate import run_eval

    backbone = tiny_sign_clip(tiny_text)
    save_backbone_folder(backbone, tmp_path / "models" / "sign_clip_gtsrb")
    overrides = ["data=synthetic_signs", "data.train_per_class=6", "data.test_per_class=2", "trainer.accelerator=cpu",
                 "zeroshot.template_sets=[simple]", "model.prompts.descriptions=class_descriptions/synthetic_signs.yaml",
                 "data.cache=false"]
    cfg = without_hydra_node(compose_experiment("zeroshot_sign_clip_signs58", overrides, root=tmp_path))
    assert cfg.model.clip.name_or_path == str(tmp_path / "models" / "sign_clip_gtsrb")
    metrics = run_eval(cfg)
    assert 0.0 <= metrics["summary"]["test_accuracy"] <= 1.0 and "simple" in metrics["zeroshot"]
    concepts = metrics["concepts"]  # shared/unshared split written by the recipe (synthetic ids 0-9 here)
    assert concepts["shared_images"] + concepts["unshared_images"] == concepts["all_images"] == metrics["data"]["test"]
    assert torch.is_tensor(backbone.logit_scale)


def test_frozen_head_recipe_trains_the_image_tower_against_the_fixed_zero_shot_head(tmp_path, tiny_text):
    from clipft.methods.loading import load_module
    from clipft.models.backbone_folder import save_backbone_folder

    backbone = tiny_sign_clip(tiny_text)
    save_backbone_folder(backbone, tmp_path / "models" / "sign_clip_signs58")  # where the recipe looks
    overrides = ["data=synthetic_signs", "data.image_size=null", "data.mean=null", "data.std=null",
                 "model.clip.image_size=32", f"data.root={tmp_path / 'synthetic'}", "~data.download"]
    metrics = run_experiment("gtsrb_frozen_head_sign_clip", overrides, tmp_path)
    assert metrics["config"]["model"]["freeze_head"] is True and metrics["summary"]["best_val_acc"] is not None

    trained = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt").eval()
    before = backbone.state_dict()
    after = trained.backbone.state_dict()
    moved = {key for key, value in before.items() if value.is_floating_point() and not torch.equal(value, after[key])}
    assert moved and all(key.startswith("visual") for key in moved), sorted(moved)[:5]  # text tower and scale untouched
    head = trained.head.weight.detach().clone()
    with torch.no_grad():
        trained.head_initialised.fill_(False)
        trained.initialise_head()  # the zero-shot head of the (unchanged) text tower
    assert torch.allclose(head, trained.head.weight, atol=1e-5) and torch.count_nonzero(trained.head.bias) == 0
