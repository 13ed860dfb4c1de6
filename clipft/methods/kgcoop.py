"""KgCoOp: CoOp held near the hand-crafted prompt (Yao et al., "Visual-Language Prompt Tuning with
Knowledge-guided Context Optimization", CVPR 2023).

CoOp's learned context, plus a penalty on how far the learned prompts' class text embeddings drift from
the hand-crafted prompts' (``"a photo of a {}."``): ``loss = CE + lambda * (1 - mean_c cos(w_c, w_c^clip))``.
With unit-norm embeddings ``1 - cos = ||w - w^clip||^2 / 2``, so this is the paper's
``lambda/N_c * sum_c ||w_c - w_c^clip||^2`` with half the weight; the code's form is kept, so ``lambda = 8``
means what it means in the reference.

After the reference implementation, github.com/htyao89/KgCoOp @ c43ccc3 (``KgCoOp/trainers/kgcoop.py``,
``configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml``, ``scripts/base2new_train.sh``, ``scripts/run.sh``) on its
Dassl.ProGrad.pytorch; ``tests/test_parity_kgcoop.py`` transcribes it and compares:

- the penalty: ``CosineSimilarity(dim=1, eps=1e-7)`` between the normalised learned and hand-crafted class
  embeddings, ``1 - mean`` over classes (kgcoop.py:238-241), weighted by ``kg_weight`` (``TRAINER.COOP.W``,
  kgcoop.py:265,310; 8.0 in ``scripts/run.sh`` and ``xd_train.sh``; the code's default is 1.0).
- the hand-crafted embeddings: the frozen text tower on the class prompts ``prompts@model.prompts`` ("_" in
  a class name read as a space, kgcoop.py:137), per prompt normalised, averaged, renormalised (clipft's
  zero-shot head); the reference encodes one dataset template (``CUSTOM_TEMPLATES``, kgcoop.py:37-54,136-146),
  "a photo of a {}." for ImageNet, Caltech101, SUN397 and StanfordCars; with one template both are the same.
- the context starts as "a photo of a" (kgcoop.py:94-104, ``CTX_INIT: True`` in both configs: the words are
  hard-coded there), class token at the end, one shared context; only the context trains (kgcoop.py:268-273).
- SGD lr 0.002, momentum 0.9, weight decay 5e-4, one warm-up epoch at 1e-5 then cosine per epoch, as CoOp
  (``vit_b16_ep100_ctxv1.yaml:15-22``, Dassl defaults); 100 epochs, batch 128 (trainer and data settings).

Everything else is :class:`~clipft.methods.coop.CoOp` (its switches apply). Not done: the reference's fp16
hand-crafted embeddings (a second CLIP copy in fp16, kgcoop.py:132-146; here the same frozen tower, fp32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.coop import CoOp
from clipft.methods.zeroshot_head import zeroshot_weights

COSINE_EPS = 1e-7  # torch.nn.CosineSimilarity(dim=1, eps=1e-07), kgcoop.py:238


class KgCoOp(CoOp):
    """CoOp with the knowledge-guided penalty towards the hand-crafted prompts' text embeddings.

    Args:
        kg_weight: ``lambda``, the weight of ``1 - mean_c cos(learned_c, hand-crafted_c)`` (0 = CoOp).
        Every other argument: :class:`~clipft.methods.coop.CoOp`.
    """

    passes_on = (
        "class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing", "n_ctx", "ctx_init",
        "class_specific", "class_token_position", "csc_from_init", "init_seed", "text_chunk_size",
    )

    def __init__(
        self,
        *args: Any,
        kg_weight: float = 8.0,
        **kwargs: Any,
    ) -> None:
        if isinstance(kg_weight, bool) or not isinstance(kg_weight, (int, float)) or kg_weight < 0:
            raise ConfigError(f"kg_weight must be a number >= 0, got {kg_weight!r}")
        super().__init__(*args, **kwargs)
        self._init_generator = None  # drawn from in CoOp's constructor only
        self.kg_weight = float(kg_weight)
        self._handcrafted: torch.Tensor | None = None

    def handcrafted_prompts(self) -> list[list[str]]:
        """The class prompts, "_" in a class name read as a space as in the learned prompts (kgcoop.py:127,137)."""
        return [
            [prompt.replace(name, name.replace("_", " ")) for prompt in named] + described
            for name, named, described in zip(self.class_names, self.prompt_set.named, self.prompt_set.described)
        ]

    def handcrafted_text(self) -> torch.Tensor:
        """``w^clip``: the frozen text tower's zero-shot head on the hand-crafted prompts, computed once."""
        if self._handcrafted is None or self._handcrafted.device != self.device:
            self._handcrafted = zeroshot_weights(self.backbone, self.handcrafted_prompts(), self.device).float().detach()
        return self._handcrafted

    def knowledge_loss(self, text: torch.Tensor) -> torch.Tensor:
        """``1 - mean_c cos(text_c, w^clip_c)`` (kgcoop.py:238-241)."""
        cos = nn.functional.cosine_similarity(text.float(), self.handcrafted_text(), dim=1, eps=COSINE_EPS)
        return 1.0 - cos.mean()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """``CE(logits) + kg_weight * knowledge_loss`` (kgcoop.py:309-310); the class text is encoded once per step."""
        images, labels = batch[0], batch[1]
        text = self.class_text_features()
        image = self.image_features(images)
        logits = self.logit_scale() * image @ text.to(image.dtype).t()
        knowledge = self.knowledge_loss(text)
        loss = self.classification_loss(logits, labels) + self.kg_weight * knowledge
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("train/kg_loss", knowledge, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss
