"""Backbones: wrappers that expose ``encode_image``, ``encode_text``, ``logit_scale`` and preprocessing."""

from clipft.models.dual_encoder import DualEncoderBackbone
from clipft.models.hf_auto import HFAutoBackbone
from clipft.models.hf_clip import HFCLIPBackbone
from clipft.models.hf_siglip import HFSiglipBackbone
from clipft.models.open_clip_backbone import OpenCLIPBackbone
from clipft.models.tiny_clip import TINY_CLIP_CONFIG, save_tiny_clip
from clipft.models.torchvision_backbones import TorchvisionBackbone, build_torchvision_backbone

__all__ = [
    "DualEncoderBackbone",
    "HFAutoBackbone",
    "HFCLIPBackbone",
    "HFSiglipBackbone",
    "OpenCLIPBackbone",
    "TINY_CLIP_CONFIG",
    "TorchvisionBackbone",
    "build_torchvision_backbone",
    "save_tiny_clip",
]
