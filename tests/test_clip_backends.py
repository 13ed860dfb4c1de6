"""Backends behind the one backbone interface: open_clip, dual encoders from towers, the zero-shot head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipft.errors import ConfigError
from clipft.methods.zeroshot_head import zeroshot_weights
from clipft.models import DualEncoderBackbone, OpenCLIPBackbone
from clipft.models.open_clip_backbone import save_tiny_open_clip
from clipft.models.towers import HFTextTower, resolve_package_path, save_tiny_text_encoder

INTERFACE = ("encode_image", "encode_text", "tokenize", "logit_scale", "preprocessing", "image_parameters", "text_parameters")


@pytest.fixture(scope="module")
def tiny_open_clip_dir(tmp_path_factory):
    return save_tiny_open_clip(tmp_path_factory.mktemp("open-clip"))


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory):
    return save_tiny_text_encoder(tmp_path_factory.mktemp("tiny-bert"))


def tiny_dual(tiny_text_dir, **kwargs) -> DualEncoderBackbone:
    return DualEncoderBackbone(
        image_tower={"source": "torchvision", "name": "mobilenet_v2", "pretrained": False},
        text_tower={"name_or_path": str(tiny_text_dir), "max_length": 16},
        embed_dim=16, image_size=32, **kwargs,
    )


def _check_interface(backbone, size: int) -> None:
    for attr in INTERFACE:
        assert hasattr(backbone, attr), attr
    text = backbone.encode_text(**backbone.tokenize(["a photo of a stop sign", "yield"]))
    image = backbone.encode_image(torch.randn(2, 3, size, size))
    assert text.shape == image.shape
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    image_ids = {id(p) for p in backbone.image_parameters()}
    text_ids = {id(p) for p in backbone.text_parameters()}
    assert image_ids and text_ids and not image_ids & text_ids
    assert id(backbone.logit_scale) not in image_ids | text_ids


def test_open_clip_local_folder_loads_its_saved_weights(tiny_open_clip_dir):
    a = OpenCLIPBackbone(str(tiny_open_clip_dir))
    b = OpenCLIPBackbone(f"local-dir:{tiny_open_clip_dir}")
    _check_interface(a, 32)
    assert a.preprocessing["image_size"] == 32
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(a.encode_image(x), b.encode_image(x))  # the folder's weights, not a random init


def test_open_clip_bad_name_is_a_config_error():
    with pytest.raises(ConfigError, match="open_clip"):
        OpenCLIPBackbone("No-Such-Model-42")


def test_dual_encoder_interface_and_seeded_projections(tiny_text_dir):
    a, b = tiny_dual(tiny_text_dir), tiny_dual(tiny_text_dir)
    _check_interface(a, 32)
    assert torch.equal(a.visual_projection.weight, b.visual_projection.weight)
    c = tiny_dual(tiny_text_dir, init_seed=1)
    assert not torch.equal(a.visual_projection.weight, c.visual_projection.weight)
    proj = {id(p) for p in a.projection_parameters()}
    assert proj == {id(a.visual_projection.weight), id(a.text_projection.weight)}


def test_locked_image_tower_stays_frozen_and_in_eval_mode(tiny_text_dir):
    backbone = tiny_dual(tiny_text_dir, lock_image=True)
    backbone.train()
    assert not backbone.visual.training and backbone.text.training
    assert not any(p.requires_grad for p in backbone.visual.parameters())
    assert backbone.visual_projection.weight.requires_grad
    running = backbone.visual.model.features[0][1].running_mean.clone()
    backbone.encode_image(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert torch.equal(running, backbone.visual.model.features[0][1].running_mean)  # BatchNorm stats untouched


def test_text_tower_mean_pooling_ignores_padding(tiny_text_dir):
    tower = HFTextTower(str(tiny_text_dir)).eval()
    alone = tower(**tower.tokenize(["stop"]))
    padded = tower(**tower.tokenize(["stop", "a much longer prompt with many words"]))
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-4)


def test_package_paths_and_bad_text_tower(tmp_path):
    path = resolve_package_path("python-package:clipft/models")
    assert path.endswith("clipft/models")
    with pytest.raises(ConfigError, match="not installed"):
        resolve_package_path("python-package:no_such_pkg_xyz/model")
    with pytest.raises(ConfigError, match="config.json"):
        HFTextTower(str(tmp_path))


class _FixedText(torch.nn.Module):
    """A backbone whose text embeddings are given vectors (unnormalised), to check the head's maths."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        super().__init__()
        self.vectors = vectors

    def tokenize(self, texts, device=None):
        return {"texts": list(texts)}

    def encode_text(self, texts):
        return torch.tensor([self.vectors[t] for t in texts])


def test_zeroshot_head_averages_normalised_prompt_embeddings():
    backbone = _FixedText({"a1": [10.0, 0.0], "a2": [0.0, 1.0], "b1": [1.0, 1.0]})
    head = zeroshot_weights(backbone, [["a1", "a2"], ["b1"]], "cpu")
    s = 2 ** -0.5
    torch.testing.assert_close(head, torch.tensor([[s, s], [s, s]]))  # normalise first: both prompts vote equally
    unnormalised_first = F.normalize(torch.tensor([10.0, 1.0]) / 2, dim=0)
    assert not torch.allclose(head[0], unnormalised_first)


def test_zeroshot_head_is_computed_without_dropout_and_keeps_each_tower_mode(tiny_text_dir):
    """A head built while the module trains (on_fit_start of CE fine-tuning, the frozen head, CLAP) is the eval-mode head."""
    backbone = tiny_dual(tiny_text_dir, lock_image=True)
    prompts = [["a red circle", "a round red sign"], ["a blue arrow pointing left"]]
    reference = zeroshot_weights(backbone.eval(), prompts, "cpu")
    backbone.train()
    assert backbone.text.training and not backbone.visual.training  # the locked image tower stays in eval
    tokens = backbone.tokenize(["a red circle"])
    torch.manual_seed(0)
    noisy = backbone.encode_text(**tokens)
    assert not torch.allclose(noisy, backbone.encode_text(**tokens))  # dropout is live in train mode
    for _ in range(2):
        torch.testing.assert_close(zeroshot_weights(backbone, prompts, "cpu"), reference)
    assert backbone.training and backbone.text.training and not backbone.visual.training


def test_a_saved_backbone_folder_reloads_by_path_to_identical_outputs(tiny_text_dir, tmp_path):
    """sign-CLIP's format: safetensors + JSON + the text tower's HF folder, loaded like a hub id."""
    from clipft.methods import ContrastiveFineTune
    from clipft.models.backbone_folder import save_backbone_folder

    torch.manual_seed(0)
    original = tiny_dual(tiny_text_dir, init_seed=3).eval()
    with torch.no_grad():
        original.logit_scale.fill_(2.5)
        original.visual_projection.weight.mul_(1.7)  # "trained": differs from any fresh build
    folder = save_backbone_folder(original, tmp_path / "sign_clip")
    assert not list(folder.rglob("*.bin")) and (folder / "model.safetensors").is_file()
    reloaded = DualEncoderBackbone(name_or_path=str(folder)).eval()
    images, texts = torch.randn(3, 3, 32, 32), ["a red circle", "a blue arrow pointing left"]
    with torch.no_grad():
        assert torch.equal(original.encode_image(images), reloaded.encode_image(images))
        assert torch.equal(original.encode_text(**original.tokenize(texts)), reloaded.encode_text(**reloaded.tokenize(texts)))
    assert float(reloaded.logit_scale.detach()) == 2.5 and reloaded.preprocessing == original.preprocessing
    module = ContrastiveFineTune(
        ["stop", "yield"],
        clip={"_target_": "clipft.models.DualEncoderBackbone", "name_or_path": str(folder)},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-4},
    )
    with torch.no_grad():
        assert torch.allclose(module.eval().backbone.encode_image(images), original.encode_image(images))
    with pytest.raises(ConfigError, match="not a clipft backbone folder"):
        DualEncoderBackbone(name_or_path=str(tmp_path))
