"""CLAP: a zero-shot-initialised linear probe held near the text prototypes by a class-adaptive penalty
(Silva-Rodríguez et al., "A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models", CVPR 2024).

The class weights ``W`` start at the zero-shot head (the class text embeddings ``T``), so epoch 0
is zero-shot. They are fitted on the cached training features with
``CE(scale * f @ normalize(W).T, y) + sum_c lambda_c * ||w_c - t_c||^2``, where ``lambda_c`` is the zero-shot
model's mean probability for class ``c`` on its own training images. A class the text already
recognises stays near its prototype; a class it misses may move. No validation split and no
hyper-parameter search are needed: that is the method's point.

Defaults after the reference implementation (github.com/jusiro/CLAP): SGD with momentum 0.9, 300
epochs. Two departures: the fit here is full-batch on one unaugmented view of each training image
(the reference draws minibatches of several augmented views), and the learning rate is 0.01, since
0.1 diverged in this full-batch fit (loss 1.11 -> 3.25 in 60 steps on the tiny test CLIP). The fit runs on the cached features in ``on_fit_start``
(hand-written: a few hundred full-batch steps on a tensor need no dataloader), then fit stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.features import split_features

NO_OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 0.01}


class CLAP(CLIPMethod):
    """Class-adaptive constrained linear probe over frozen towers.

    Args:
        epochs, lr, momentum: the full-batch SGD fit on the cached training features.
        constraint: ``adaptive`` (CLAP's per-class lambda) | ``none`` (ZS-LP: the zero-shot-initialised probe alone).
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        clip: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        prompts: dict[str, Any] | None = None,
        epochs: int = 300,
        lr: float = 0.01,
        momentum: float = 0.9,
        constraint: str = "adaptive",
        feature_batch_size: int = 128,
    ) -> None:
        if constraint not in ("adaptive", "none"):
            raise ConfigError(f"constraint={constraint!r} must be 'adaptive' or 'none'")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1 or float(lr) <= 0:
            raise ConfigError(f"epochs={epochs!r} must be an integer >= 1 and lr={lr!r} positive")
        super().__init__(
            class_names, clip, optimizer or dict(NO_OPTIMIZER), None, prompts,
            freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True,
        )
        self.save_hyperparameters()
        self.epochs, self.lr, self.momentum, self.constraint = int(epochs), float(lr), float(momentum), constraint
        self.feature_batch_size = int(feature_batch_size)
        dim = int(self.backbone.embed_dim)
        self.weight = nn.Parameter(torch.zeros(self.num_classes, dim))
        self.register_buffer("penalty", torch.zeros(self.num_classes))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def initialise_weight(self) -> None:
        if not bool(self.fitted):
            self.weight.copy_(self.frozen_class_text().to(self.weight))

    def prepare_for_inference(self) -> None:
        self.initialise_weight()  # an unfitted CLAP is the zero-shot classifier

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """A cosine classifier: the weights are normalised, as the text prototypes they start from."""
        return self.logit_scale() * features.float() @ nn.functional.normalize(self.weight, dim=-1).t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.class_logits(self.backbone.encode_image(images))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        weight = (self.logit_scale() * nn.functional.normalize(self.weight.float(), dim=-1)).detach()
        return weight, torch.zeros(weight.shape[0], device=weight.device)

    def class_penalty(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """lambda_c: the zero-shot model's mean probability of class c on its own training images."""
        with torch.no_grad():
            probs = (self.logit_scale() * features @ self.frozen_class_text().float().t()).softmax(-1)
            penalty = torch.zeros(self.num_classes, device=features.device)
            for c in labels.unique():
                penalty[c] = probs[labels == c, c].mean()
        return penalty

    def fit_weight(self, features: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """The constrained full-batch fit; returns the loss per epoch."""
        features, labels = features.to(self.device), labels.to(self.device)
        self.initialise_weight()
        anchors = self.frozen_class_text().float().detach()
        if self.constraint == "adaptive":
            self.penalty.copy_(self.class_penalty(features, labels))
        optimizer = torch.optim.SGD([self.weight], lr=self.lr, momentum=self.momentum)
        losses = []
        with torch.enable_grad():
            for _ in range(self.epochs):
                loss = nn.functional.cross_entropy(self.class_logits(features), labels)
                if self.constraint == "adaptive":
                    loss = loss + (self.penalty * ((self.weight - anchors) ** 2).sum(-1)).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        self.fitted.fill_(1)
        return losses

    def on_fit_start(self) -> None:
        if bool(self.fitted):
            return
        (features, labels), _ = split_features(self, self.feature_batch_size)
        self.fit_weight(features, labels)
        self.trainer.should_stop = True  # fitted: one validation-only epoch is enough

    def configure_optimizers(self) -> Any:
        return None  # the fit happens on cached features in on_fit_start

    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None
