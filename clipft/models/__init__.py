"""Backbones: wrappers that expose ``encode_image``, ``encode_text``, ``logit_scale`` and preprocessing."""

from clipft.models.hf_clip import HFCLIPBackbone
from clipft.models.tiny_clip import TINY_CLIP_CONFIG, save_tiny_clip

__all__ = ["HFCLIPBackbone", "TINY_CLIP_CONFIG", "save_tiny_clip"]
