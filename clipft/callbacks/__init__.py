"""Lightning callbacks any clipft module can use: two-stage fine-tuning, an EMA of the weights, feature banks."""

from clipft.callbacks.ema import EMAWeights
from clipft.callbacks.feature_bank import FeatureBankCallback
from clipft.callbacks.finetuning import TwoStageFinetuning
from clipft.callbacks.safe_checkpoint import SafeModelCheckpoint

__all__ = ["EMAWeights", "FeatureBankCallback", "SafeModelCheckpoint", "TwoStageFinetuning"]
