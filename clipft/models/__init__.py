"""Backbones: wrappers that expose ``encode_image``, ``encode_text``, ``logit_scale`` and preprocessing."""

from clipft import registry
from clipft.models.dual_encoder import DualEncoderBackbone
from clipft.models.hf_auto import HFAutoBackbone
from clipft.models.hf_clip import HFCLIPBackbone
from clipft.models.hf_siglip import HFSiglipBackbone
from clipft.models.open_clip_backbone import OpenCLIPBackbone
from clipft.models.tiny_clip import TINY_CLIP_CONFIG, save_tiny_clip
from clipft.models.torchvision_backbones import TorchvisionBackbone, build_torchvision_backbone


def _tiny_dual_encoder(tmp):
    from clipft.models.towers import save_tiny_text_encoder

    return DualEncoderBackbone(
        image_tower={"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
        text_tower={"name_or_path": str(save_tiny_text_encoder(tmp / "bert")), "max_length": 16},
        embed_dim=16, image_size=32,
    )


def _tiny_open_clip(tmp):
    from clipft.models.open_clip_backbone import save_tiny_open_clip

    return OpenCLIPBackbone(str(save_tiny_open_clip(tmp / "open_clip")))


# clipft's backbones in clipft.registry (kind "backbone"): checkpoints may name them by either path;
# ``tiny(tmp_path)`` builds a small random one for the contract tests (tests/test_registry.py).
registry.register("backbone", HFCLIPBackbone, tiny=lambda tmp: HFCLIPBackbone(config={}))
registry.register("backbone", HFAutoBackbone, tiny=lambda tmp: HFAutoBackbone(str(save_tiny_clip(tmp / "hf_auto"))))
registry.register("backbone", HFSiglipBackbone, tiny=lambda tmp: HFSiglipBackbone(config={}))
registry.register("backbone", OpenCLIPBackbone, tiny=_tiny_open_clip)
registry.register("backbone", DualEncoderBackbone, tiny=_tiny_dual_encoder)
registry.register("backbone", TorchvisionBackbone, tiny=lambda tmp: build_torchvision_backbone("mobilenet_v3_small", False))
registry.register("backbone", build_torchvision_backbone, tiny=lambda tmp: build_torchvision_backbone("resnet18", False))

__all__ = [
    "TINY_CLIP_CONFIG",
    "DualEncoderBackbone",
    "HFAutoBackbone",
    "HFCLIPBackbone",
    "HFSiglipBackbone",
    "OpenCLIPBackbone",
    "TorchvisionBackbone",
    "build_torchvision_backbone",
    "save_tiny_clip",
]
