"""LightningModules: one training/evaluation recipe per module."""

from clipft.modules.classification import ClassificationModule
from clipft.modules.clip_finetune import CLIPFineTune

__all__ = ["ClassificationModule", "CLIPFineTune"]
