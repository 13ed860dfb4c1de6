"""LightningModules: one training/evaluation recipe per module."""

from clipft.modules.classification import ClassificationModule
from clipft.modules.clip_finetune import CLIPFineTune
from clipft.modules.clip_linear_probe import CLIPLinearProbe
from clipft.modules.clip_zeroshot import CLIPZeroShot
from clipft.modules.cnn_transfer import CNNTransfer

__all__ = ["ClassificationModule", "CLIPFineTune", "CLIPLinearProbe", "CLIPZeroShot", "CNNTransfer"]
