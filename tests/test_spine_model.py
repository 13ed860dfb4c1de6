"""The backbone loader, the combined loss and one real optimisation step of ContrastiveFineTune."""

from __future__ import annotations

import math

import pytest
import torch

from clipft.errors import ConfigError
from clipft.methods.contrastive_finetune import ContrastiveFineTune
from clipft.methods.losses import contrastive_loss, contrastive_targets
from clipft.models import HFCLIPBackbone

CLASSES = ["stop", "yield", "keep left"]
OPT = {"_target_": "torch.optim.AdamW", "lr": 3e-3, "weight_decay": 0.0}


def test_local_folder_loads_through_the_hub_id_path(tiny_clip_dir):
    backbone = HFCLIPBackbone(name_or_path=str(tiny_clip_dir))
    assert backbone.preprocessing["image_size"] == 32
    assert backbone.name_or_path == str(tiny_clip_dir)
    tokens = backbone.tokenize(["a photo of a stop sign", "yield"])
    text = backbone.encode_text(**tokens)
    image = backbone.encode_image(torch.randn(2, 3, 32, 32))
    assert text.shape == image.shape == (2, backbone.embed_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    # the same weights as a second load: the folder, not a random init, is what got loaded
    again = HFCLIPBackbone(name_or_path=str(tiny_clip_dir))
    assert torch.equal(again.model.text_projection.weight, backbone.model.text_projection.weight)


def test_preprocessing_override_and_errors(tiny_clip_dir, tmp_path):
    backbone = HFCLIPBackbone(name_or_path=str(tiny_clip_dir), image_size=48, image_mean=[0.5] * 3)
    assert backbone.preprocessing["image_size"] == 48
    assert backbone.preprocessing["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(ConfigError, match="config.json"):
        HFCLIPBackbone(name_or_path=str(tmp_path))  # a folder without a checkpoint
    with pytest.raises(ConfigError, match="name_or_path"):
        HFCLIPBackbone()


def test_multi_positive_contrastive_loss_matches_hand_computation():
    # 3 images, labels [0, 0, 1]; features chosen so the logits are easy to write down.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    scale = 2.0
    # logits = 2 * image @ text.T = [[2,2,0],[0,0,2],[2,2,0]]
    # image->text targets: rows 0,1 -> [.5,.5,0]; row 2 -> [0,0,1]
    lse_220 = math.log(2 * math.e**2 + 1)
    lse_002 = math.log(2 + math.e**2)
    i2t = ((lse_220 - 2) + (lse_002 - 0) + (lse_220 - 0)) / 3
    # text->image: logits.T = [[2,0,2],[2,0,2],[0,2,0]], same targets
    lse_202 = lse_220
    lse_020 = lse_002
    t2i = ((0.5 * (lse_202 - 2) + 0.5 * (lse_202 - 0)) + (0.5 * (lse_202 - 2) + 0.5 * (lse_202 - 0)) + (lse_020 - 0)) / 3
    expected = 0.5 * (i2t + t2i)
    got = contrastive_loss(image, text, labels, scale, mode="multi_positive")
    assert got.item() == pytest.approx(expected, rel=1e-5)


def _reference_loss(image, text, labels, scale, multi_positive):
    """Pure-Python CLIP loss over lists, one row at a time."""
    n = len(labels)
    logits = [[scale * sum(a * b for a, b in zip(image[i], text[j])) for j in range(n)] for i in range(n)]

    def row_loss(row, targets):
        lse = math.log(sum(math.exp(v) for v in row))
        return sum(t * (lse - v) for t, v in zip(targets, row))

    def targets(i):
        if not multi_positive:
            return [1.0 if j == i else 0.0 for j in range(n)]
        same = [1.0 if labels[j] == labels[i] else 0.0 for j in range(n)]
        return [s / sum(same) for s in same]

    i2t = sum(row_loss(logits[i], targets(i)) for i in range(n)) / n
    t2i = sum(row_loss([logits[j][i] for j in range(n)], targets(i)) for i in range(n)) / n
    return 0.5 * (i2t + t2i)


def test_contrastive_modes_against_a_reference_on_asymmetric_features():
    image = [[1.0, 0.0], [0.6, 0.8], [0.8, -0.6], [0.0, 1.0]]
    # class 0 has three different prompts (e.g. random templates / descriptions per sample)
    text = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]]
    labels = [0, 0, 1, 0]
    t = lambda x: torch.tensor(x)  # noqa: E731
    multi = contrastive_loss(t(image), t(text), t(labels), 3.0, mode="multi_positive").item()
    plain = contrastive_loss(t(image), t(text), t(labels), 3.0, mode="arange").item()
    assert multi == pytest.approx(_reference_loss(image, text, labels, 3.0, True), rel=1e-5)
    assert plain == pytest.approx(_reference_loss(image, text, labels, 3.0, False), rel=1e-5)
    assert abs(multi - plain) > 1e-3


def test_identical_class_prompts_make_the_modes_agree():
    # With one shared prompt per class the duplicate columns carry equal logits, so spreading
    # the target over them changes nothing: documents why multi_positive matters for varied prompts.
    image = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    class_text = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    multi = contrastive_loss(image, class_text[labels], labels, 5.0, mode="multi_positive")
    plain = contrastive_loss(image, class_text[labels], labels, 5.0, mode="arange")
    assert multi.item() == pytest.approx(plain.item(), rel=1e-5)


def test_targets_never_treat_same_class_as_negative():
    targets = contrastive_targets(torch.tensor([3, 1, 3, 3]), "multi_positive")
    assert torch.allclose(targets.sum(1), torch.ones(4))
    assert targets[0, 2] == pytest.approx(1 / 3) and targets[0, 1] == 0


def _module(**kwargs):
    return ContrastiveFineTune(
        class_names=CLASSES,
        clip={"_target_": "clipft.models.HFCLIPBackbone", "config": {}},
        optimizer=OPT,
        scheduler=None,
        **kwargs,
    )


def _easy_batch(n=24, seed=0):
    """Class = which third of the image is bright: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randn(n, 3, 32, 32, generator=g) * 0.1
    for i, y in enumerate(labels):
        images[i, :, :, int(y) * 10 : int(y) * 10 + 10] += 2.0
    return images, labels


def test_one_training_step_changes_weights_and_loss_drops():
    torch.manual_seed(0)
    module = _module(label_smoothing=0.1)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    batch = _easy_batch()
    before = module.backbone.model.visual_projection.weight.detach().clone()
    losses = []
    for step in range(12):
        optimizer.zero_grad()
        loss = module.training_step(batch, step)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert not torch.equal(before, module.backbone.model.visual_projection.weight)
    assert losses[-1] < 0.7 * losses[0], losses


def test_eval_logits_use_every_prompt_of_a_class():
    module = _module(prompts={"templates": ["a photo of a {}.", "a sign: {}"]}).eval()
    assert module.class_prompts[2] == ["a photo of a keep left.", "a sign: keep left"]
    head = module.class_text_features()
    assert head.shape == (3, module.backbone.embed_dim)
    assert torch.allclose(head.norm(dim=-1), torch.ones(3), atol=1e-5)
    logits = module(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sim_weight": 0.0, "cls_weight": 0.0}, "sim_weight"), ({"contrastive_target": "nope"}, "contrastive_target")],
)
def test_bad_loss_settings_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _module(**kwargs)


def test_concurrent_generation_of_the_synthetic_set_is_safe(tmp_path):
    """Two runs started together in a fresh root must not trip over each other's temp folder."""
    import multiprocessing as mp

    from clipft.data.synthetic_signs import generate_synthetic_signs

    root = tmp_path / "synthetic_signs"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=generate_synthetic_signs, args=(root, 3, 1)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list((root / "train").rglob("*.png"))) == 30
    assert not root.with_name("synthetic_signs.tmp").exists()


@pytest.mark.parametrize("name", ["cosine", "linear", "constant"])
def test_warmup_schedules_follow_transformers_formulas(name):
    """LR factor per step against the hand-computed curve: 0 -> 1 over 4 warm-up steps, then the shape."""
    from clipft.methods.optim import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    min_ratio = 0.1 if name == "cosine" else 0.0
    sched = build_scheduler({"name": name, "warmup_steps": 4, "min_lr_ratio": min_ratio}, opt, total_steps=12)["scheduler"]
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"] / 2.0)
        opt.step()
        sched.step()
    for step, factor in enumerate(seen):
        if step < 4:
            expected = step / 4
        elif name == "constant":
            expected = 1.0
        else:
            progress = (step - 4) / 8
            shape = 0.5 * (1 + math.cos(math.pi * progress)) if name == "cosine" else 1 - progress
            expected = min_ratio + (1 - min_ratio) * shape
        assert factor == pytest.approx(expected), (step, factor, expected)
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        build_scheduler({"name": "linear", "min_lr_ratio": 0.1}, opt, total_steps=12)
