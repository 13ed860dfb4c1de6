"""Grad-CAM: target-layer choice for CNNs, ViT towers and explicit modules; heat maps that point at the evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from clipft.errors import ConfigError
from clipft.evaluation.gradcam import (
    compute_cams,
    explain_paths,
    gradcam_target,
    save_gradcam_grid,
    vit_reshape_transform,
)
from clipft.methods.classification import ClassificationModule

SGD = {"_target_": "torch.optim.SGD", "lr": 0.1}
PRE = {"image_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


class TorchvisionClassifier(ClassificationModule):
    """How a CNN ClassificationModule wraps a torchvision net (random init, no download)."""

    def __init__(self, arch: str, class_names=("a", "b", "c")) -> None:
        import torchvision

        super().__init__(list(class_names), SGD)
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=len(class_names))
        self.preprocessing = dict(PRE)

    def forward(self, images):
        return self.net(images)


class PatchEvidence(ClassificationModule):
    """Class 1's logit is the summed response of a bias-free conv: evidence sits where the image is bright."""

    def __init__(self) -> None:
        super().__init__(["dark", "bright"], SGD)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 0.1)

    def forward(self, images):
        feats = torch.relu(self.conv(images))
        s = feats.mean(dim=(1, 2, 3))
        return torch.stack([-s, s], dim=1)


def test_resnet_and_mobilenet_explain_their_last_conv_block():
    torch.manual_seed(0)
    resnet = TorchvisionClassifier("resnet18").eval()
    layers, reshape = gradcam_target(resnet)
    assert layers == [resnet.net.layer4[-1]] and reshape is None
    mobilenet = TorchvisionClassifier("mobilenet_v2").eval()
    assert gradcam_target(mobilenet)[0] == [mobilenet.net.features[-1]]
    cams = compute_cams(resnet, torch.randn(2, 3, 64, 64))
    assert cams.shape == (2, 64, 64)
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0


def test_explicit_target_layers_method_wins():
    module = TorchvisionClassifier("resnet18")
    module.gradcam_target_layers = lambda: [module.net.layer3]
    assert gradcam_target(module)[0] == [module.net.layer3]


def test_heat_map_points_at_the_evidence():
    model = PatchEvidence().eval()
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, 2:12, 4:14] = 1.0  # the only bright patch: top-left
    cam = compute_cams(model, image, target_classes=[1])[0]
    assert cam[:16, :16].sum() > 0.9 * cam.sum()
    assert np.unravel_index(cam.argmax(), cam.shape)[0] < 16


def test_vit_reshape_drops_cls_and_keeps_patch_order():
    tokens = torch.arange(2 * 17 * 8, dtype=torch.float32).reshape(2, 17, 8)
    grid = vit_reshape_transform(tokens)
    assert grid.shape == (2, 8, 4, 4)
    assert torch.equal(grid[1, :, 2, 3], tokens[1, 1 + 2 * 4 + 3])
    with pytest.raises(ConfigError):
        vit_reshape_transform(torch.zeros(2, 8))


def test_clip_image_tower_uses_last_block_norm(tmp_path):
    from clipft.methods import ContrastiveFineTune

    torch.manual_seed(0)
    model = ContrastiveFineTune(
        ["stop", "yield"], clip={"_target_": "clipft.models.HFCLIPBackbone", "config": {}}, optimizer=SGD
    ).eval()
    layers, reshape = gradcam_target(model)
    assert layers == [model.backbone.model.vision_model.encoder.layers[-1].layer_norm1]
    assert reshape is vit_reshape_transform
    cams = compute_cams(model, torch.randn(2, 3, 32, 32))
    assert cams.shape == (2, 32, 32) and np.isfinite(cams).all() and cams.max() > 0


def test_no_layer_to_explain_is_a_clear_error():
    class Linear(ClassificationModule):
        def __init__(self):
            super().__init__(["a", "b"], SGD)
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(ConfigError, match="gradcam_target_layers"):
        gradcam_target(Linear())


def test_overlays_and_grid_written(tmp_path):
    torch.manual_seed(0)
    model = TorchvisionClassifier("resnet18").eval()
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    overlays = explain_paths(model, paths)
    # 64 px model input, enlarged by a whole factor (4) so it reads in a ~500 px panel; each block is one model pixel
    assert len(overlays) == 3 and overlays[0].shape == (256, 256, 3) and overlays[0].dtype == np.uint8
    assert (overlays[0][::4, ::4] == overlays[0][3::4, 3::4]).all()
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    out = save_gradcam_grid(model, paths, probs, torch.tensor([0, 0, 2]), ["a", "b", "c"], tmp_path / "grid.png", n=3)
    with Image.open(out) as im:
        assert im.size[0] > 300 and im.size[1] > 200
