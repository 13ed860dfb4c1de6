"""Example method (docs/extending.md): the zero-shot head kept fixed, a per-class bias learned.

A method is one CLIPMethod (or ClassificationModule) subclass with ``forward`` (CLIPMethod's
``training_step`` is cross-entropy on it unless overridden); the base gives prompts, the zero-shot head, parameter groups, WiSE-FT's
reference and checkpoint registration.
"""

from __future__ import annotations

import torch
from torch import nn

from clipft.methods.clip_method import CLIPMethod


class BiasTunedZeroShot(CLIPMethod):
    def __init__(self, class_names, clip, optimizer, scheduler=None, prompts=None) -> None:
        super().__init__(class_names, clip, optimizer, scheduler, prompts,
                         freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True)
        self.save_hyperparameters()
        self.bias = nn.Parameter(torch.zeros(self.num_classes))

    def extra_parameter_groups(self):
        return {"head": [("bias", self.bias)]}

    def forward(self, images):
        return self.logit_scale() * self.backbone.encode_image(images) @ self.frozen_class_text().t() + self.bias
