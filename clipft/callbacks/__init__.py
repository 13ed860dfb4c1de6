"""Lightning callbacks any clipft module can use: two-stage fine-tuning and an EMA of the weights."""

from clipft.callbacks.ema import EMAWeights
from clipft.callbacks.finetuning import TwoStageFinetuning
from clipft.callbacks.safe_checkpoint import SafeModelCheckpoint

__all__ = ["EMAWeights", "SafeModelCheckpoint", "TwoStageFinetuning"]
