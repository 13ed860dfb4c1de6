"""LightningModules: one training/evaluation recipe per module."""

from clipft.methods.classification import ClassificationModule
from clipft.methods.clip_finetune import CLIPFineTune
from clipft.methods.clip_linear_probe import CLIPLinearProbe
from clipft.methods.clip_zeroshot import CLIPZeroShot
from clipft.methods.cnn_transfer import CNNTransfer

__all__ = ["ClassificationModule", "CLIPFineTune", "CLIPLinearProbe", "CLIPZeroShot", "CNNTransfer"]
