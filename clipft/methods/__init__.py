"""Adaptation methods: one LightningModule per method, all on :class:`ClassificationModule`.

=========================  ==========================================  ===========================
method                     module                                      config (``model=``)
=========================  ==========================================  ===========================
contrastive fine-tuning    :mod:`clipft.methods.contrastive_finetune`  clip_flyp, clip_dual_encoder
linear-head fine-tuning    :mod:`clipft.methods.linear_head_finetune`  clip_linear_head, clip_lpft,
                                                                       clip_frozen_head
linear probe               :mod:`clipft.methods.clip_linear_probe`     clip_linear_probe
zero-shot (ensembles)      :mod:`clipft.methods.clip_zeroshot`         clip_zeroshot
CNN transfer               :mod:`clipft.methods.cnn_transfer`          cnn_transfer, cnn_mobilenet_v2
=========================  ==========================================  ===========================

The other files are the parts methods share: the base classes (``classification``,
``clip_method``), losses, optimisers and schedules, heads, WiSE-FT, checkpoint loading.
"""

from clipft.methods.classification import ClassificationModule
from clipft.methods.clip_linear_probe import CLIPLinearProbe
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.clip_zeroshot import CLIPZeroShot
from clipft.methods.cnn_transfer import CNNTransfer
from clipft.methods.contrastive_finetune import ContrastiveFineTune
from clipft.methods.linear_head_finetune import LinearHeadFineTune

__all__ = [
    "CLIPLinearProbe",
    "CLIPMethod",
    "CLIPZeroShot",
    "CNNTransfer",
    "ClassificationModule",
    "ContrastiveFineTune",
    "LinearHeadFineTune",
]
