"""Adaptation methods: one LightningModule per method, all on :class:`ClassificationModule`.

=========================  ==========================================  ===========================
method                     module                                      config (``model=``)
=========================  ==========================================  ===========================
contrastive fine-tuning    :mod:`clipft.methods.contrastive_finetune`  clip_flyp, clip_dual_encoder
linear-head fine-tuning    :mod:`clipft.methods.linear_head_finetune`  clip_linear_head, clip_lpft,
                                                                       clip_frozen_head
linear probe               :mod:`clipft.methods.clip_linear_probe`     clip_linear_probe
PEFT (LoRA, LoHa, IA3...)  :mod:`clipft.methods.peft_finetune`         clip_lora
prompt learning (CoOp)     :mod:`clipft.methods.coop`                  clip_coop
CoCoOp                     :mod:`clipft.methods.cocoop`                clip_cocoop
CLIP-Adapter               :mod:`clipft.methods.clip_adapter`          clip_adapter
Tip-Adapter (-F)           :mod:`clipft.methods.tip_adapter`           clip_tip_adapter, clip_tip_adapter_f
CLAP                       :mod:`clipft.methods.clap`                  clip_clap
KgCoOp                     :mod:`clipft.methods.kgcoop`                clip_kgcoop, clip_kgcoop_paper
TaskRes                    :mod:`clipft.methods.taskres`               clip_taskres
LP++                       :mod:`clipft.methods.lp_plus_plus`          clip_lp_plus_plus
CLIP-SVD                   :mod:`clipft.methods.clip_svd`              clip_svd
ProLIP                     :mod:`clipft.methods.prolip`                clip_prolip
LN-tuning / BitFit         :mod:`clipft.methods.norm_bias_tuning`      clip_norm_tuning, clip_bitfit
MaPLe (deep prompts)       :mod:`clipft.methods.maple`                 clip_maple
PromptSRC                  :mod:`clipft.methods.promptsrc`             clip_promptsrc
zero-shot (ensembles)      :mod:`clipft.methods.clip_zeroshot`         clip_zeroshot
CNN transfer               :mod:`clipft.methods.cnn_transfer`          cnn_transfer, cnn_mobilenet_v2
=========================  ==========================================  ===========================

The other files are the parts methods share: the base classes (``classification``,
``clip_method``), losses, optimisers and schedules, heads, WiSE-FT, checkpoint loading.
"""

from clipft import registry
from clipft.methods.clap import CLAP
from clipft.methods.classification import ClassificationModule
from clipft.methods.clip_adapter import CLIPAdapter
from clipft.methods.clip_linear_probe import CLIPLinearProbe
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.clip_svd import CLIPSVD
from clipft.methods.clip_zeroshot import CLIPZeroShot
from clipft.methods.cnn_transfer import CNNTransfer
from clipft.methods.cocoop import CoCoOp
from clipft.methods.contrastive_finetune import ContrastiveFineTune
from clipft.methods.coop import CoOp
from clipft.methods.kgcoop import KgCoOp
from clipft.methods.linear_head_finetune import LinearHeadFineTune
from clipft.methods.lp_plus_plus import LPPlusPlus
from clipft.methods.maple import MaPLe
from clipft.methods.norm_bias_tuning import NormBiasTuning
from clipft.methods.peft_finetune import PEFTFineTune
from clipft.methods.prolip import ProLIP
from clipft.methods.promptsrc import PromptSRC
from clipft.methods.taskres import TaskRes
from clipft.methods.tip_adapter import TipAdapter

# Every ClassificationModule subclass registered itself (kind "method") when its module was
# imported; registering the classes again adds the objects and the package-level paths.
for _cls in (CLAP, CLIPSVD, CLIPAdapter, CLIPLinearProbe, CLIPZeroShot, CNNTransfer, CoCoOp, CoOp, ContrastiveFineTune,
             KgCoOp, LPPlusPlus, LinearHeadFineTune, MaPLe, NormBiasTuning, PEFTFineTune, ProLIP, PromptSRC, TaskRes,
             TipAdapter):
    registry.register("method", _cls)

__all__ = [
    "CLAP",
    "CLIPSVD",
    "CLIPAdapter",
    "CLIPLinearProbe",
    "CLIPMethod",
    "CLIPZeroShot",
    "CNNTransfer",
    "ClassificationModule",
    "CoCoOp",
    "CoOp",
    "ContrastiveFineTune",
    "KgCoOp",
    "LPPlusPlus",
    "LinearHeadFineTune",
    "MaPLe",
    "NormBiasTuning",
    "PEFTFineTune",
    "ProLIP",
    "PromptSRC",
    "TaskRes",
    "TipAdapter",
]
