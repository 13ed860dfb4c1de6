"""LP++: a linear probe blended with the text classifier (Huang et al., "LP++: A Surprisingly Strong Linear
Probe for Few-Shot CLIP", CVPR 2024).

The logits of a normalised image feature ``f`` are ``W f + b + alpha ⊙ (T f)``: ``W, b`` a linear probe on the
visual features, ``T`` the frozen zero-shot text classifier and ``alpha`` one learned blending weight per class.
Everything is fitted on the cached training features by full-batch gradient descent whose step sizes are
computed from the data, not searched: that is the method's point.

After the reference implementation, github.com/FereshteShakeri/FewShot-CLIP-Strong-Baseline @ f81054f
(``methods/linear_probe_p2.py``, ``methods/utils.py``, ``main.py``, ``configs/base.yaml``);
``tests/test_parity_lp_plus_plus.py`` transcribes it and compares:

- initialisation (linear_probe_p2.py:94-107): ``W`` = the per-class *sums* of the training features
  (``compute_centroids``, utils.py:111-124: the division is commented out there), ``b`` drawn as
  ``nn.Linear``'s default bias, ``U(-1/sqrt(d), 1/sqrt(d))``, every ``alpha_c`` = ``alpha_init_scale`` (250) x the
  mean over classes of the class's mean zero-shot cosine on its own images (``calculate_init_alpha``, :24-30).
- step sizes (:16-22, 32-39): ``lr_w = 4 N / lambda_max(F^T F)`` for ``W`` and ``b`` (SGD, momentum 0.9),
  ``lr_alpha = N / (4 max_c sum_i (t_c . f_i)^2)`` for ``alpha`` (plain gradient steps).
- the loop (:123-139): ``epochs`` (300, ``configs/base.yaml``) full-batch steps of the cross-entropy on ``W, b``;
  every ``alpha_every`` (10) epochs ``alpha -= lr_alpha * grad``, where ``grad`` is ``alpha``'s gradient
  *accumulated since the first epoch*: the reference never zeroes it (its optimizer holds ``W, b`` only).
- ``select: best_val`` (default): the epoch with the best val accuracy, the later one on ties (:141-155);
  ``last`` (or no val split): the last epoch.
- ``augment_views: 1`` (default): the training features are one pass of the datamodule's *training* transform
  (the reference: random-resized-crop (0.5, 1) + flip, main.py:69-74,100-101); ``0``: the evaluation
  transform; ``K``: K passes pooled.
- ``T``: the zero-shot head on ``prompts@model.prompts`` (per prompt normalised, averaged, renormalised), as
  the reference's ``clip_classifier`` (utils.py:35-52) on the dataset's templates.

Not done: fp16 (the reference fits in CLIP's fp16 on CUDA; here fp32 and the eigenvalue in fp64); the
reference's few-shot val split (the datamodule's val split is used as it is); its 10 tasks per run (seeds).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError, DataError
from clipft.methods.clap import augmented_train_features
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.features import split_features, val_features

SELECTIONS = ("best_val", "last")


def lp_plus_plus_init(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    """The data-driven start and step sizes: ``weight`` (class sums), ``alpha`` (one value), ``lr_w``, ``lr_alpha``."""
    classes = text.shape[0]
    one_hot = nn.functional.one_hot(labels, classes).to(features.dtype)
    counts = one_hot.sum(0)
    if bool((counts == 0).any()):
        missing = [int(c) for c in torch.nonzero(counts == 0).flatten()[:5]]
        raise DataError(f"LP++ needs at least one training image of every class; classes {missing} have none")
    text_logits = features @ text.t()
    per_class = (one_hot * text_logits).sum(0) / counts  # the class's mean zero-shot cosine on its own images
    gram = (features.t() @ features).double()
    return {
        "weight": one_hot.t() @ features,
        "alpha": scale * per_class.double().mean(),
        "lr_w": 4.0 * len(features) / torch.linalg.eigvalsh(gram).max(),
        "lr_alpha": len(features) / (4.0 * text_logits.double().pow(2).sum(0).max()),
    }


class LPPlusPlus(CLIPMethod):
    """Linear probe + per-class blend of the text classifier, fitted on cached features with closed-form step sizes.

    Args:
        epochs: full-batch gradient steps on the cached training features.
        momentum: SGD momentum of the probe's steps.
        alpha_every: epochs between two ``alpha`` steps.
        alpha_init_scale: ``alpha``'s start is this times the mean zero-shot cosine of each class on its images.
        select: ``best_val`` (the reference) | ``last``: which epoch's classifier is kept.
        augment_views: 0 = one evaluation-transform view; K = K training-transform passes pooled (the reference: 1).
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod` (towers frozen; no optimizer is used).
    """

    reads_image_features = True  # frozen image tower, read through image_features(): a feature bank may serve it

    passes_on = ("class_names", "clip", "prompts")

    def __init__(
        self,
        *args: Any,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        epochs: int = 300,
        momentum: float = 0.9,
        alpha_every: int = 10,
        alpha_init_scale: float = 250.0,
        select: str = "best_val",
        augment_views: int = 1,
        feature_batch_size: int = 128,
        **kwargs: Any,
    ) -> None:
        for name, value in (("epochs", epochs), ("alpha_every", alpha_every), ("feature_batch_size", feature_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(augment_views, bool) or not isinstance(augment_views, int) or augment_views < 0:
            raise ConfigError(f"augment_views must be an integer >= 0, got {augment_views!r}")
        if select not in SELECTIONS:
            raise ConfigError(f"select={select!r} must be one of {list(SELECTIONS)}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
        super().__init__(
            *args, optimizer=optimizer or {"_target_": "torch.optim.SGD", "lr": 1.0}, scheduler=None,
            freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True, **kwargs,
        )
        self.epochs, self.momentum, self.alpha_every = int(epochs), float(momentum), int(alpha_every)
        self.alpha_init_scale, self.select, self.augment_views = float(alpha_init_scale), select, int(augment_views)
        self.feature_batch_size = int(feature_batch_size)
        dim = int(self.backbone.embed_dim)
        # unfitted: W = 0, b = 0, alpha = 1, the zero-shot classifier's cosines
        self.weight = nn.Parameter(torch.zeros(self.num_classes, dim))
        self.bias = nn.Parameter(torch.zeros(self.num_classes))
        self.alpha = nn.Parameter(torch.ones(self.num_classes))
        self.register_buffer("step_sizes", torch.zeros(2, dtype=torch.float64))  # lr_w, lr_alpha of the fit
        self.register_buffer("fitted", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ logits
    def text_head(self) -> torch.Tensor:
        """``T``: the frozen zero-shot classifier, ``(classes, dim)``."""
        return self.frozen_class_text().float().to(self.device)

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        raise ConfigError("LP++ learns its blend against its own prompts' classifier: template sets do not apply "
                          "(score them with model=clip_zeroshot)")

    def class_logits(self, features: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """``W f + b + alpha ⊙ (T f)`` on normalised features."""
        text = self.text_head() if text is None else text
        features = features.float()
        return features @ self.weight.t() + self.bias + self.alpha * (features @ text.t())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.class_logits(self.image_features(images))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.weight.float() + self.alpha.float().unsqueeze(1) * self.text_head()
        return weight.detach(), self.bias.detach().float()

    # ------------------------------------------------------------------ the fit
    @torch.no_grad()
    def _accuracy(self, features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor) -> float:
        return float((self.class_logits(features, text).argmax(-1) == labels).float().mean())

    def fit_head(self, features: torch.Tensor, labels: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[float]:
        """LP++'s fit on normalised features (linear_probe_p2.py:94-155); returns each epoch's loss."""
        features, labels = features.to(self.device).float(), labels.to(self.device)
        if val is not None:
            val = (val[0].to(self.device).float(), val[1].to(self.device))
        text = self.text_head().detach()
        start = lp_plus_plus_init(features, labels, text, self.alpha_init_scale)
        with torch.no_grad():
            self.weight.copy_(start["weight"])
            bound = 1.0 / math.sqrt(features.shape[1])  # nn.Linear's default bias init (fan_in = dim)
            self.bias.uniform_(-bound, bound)
            self.alpha.fill_(float(start["alpha"]))
            self.step_sizes.copy_(torch.stack([start["lr_w"], start["lr_alpha"]]))
        lr_alpha = float(start["lr_alpha"])
        optimizer = torch.optim.SGD([self.weight, self.bias], lr=float(start["lr_w"]), momentum=self.momentum)
        self.alpha.grad = None
        text_logits = features @ text.t()
        best, best_acc, losses = None, -1.0, []
        with torch.enable_grad():
            for epoch in range(self.epochs):
                logits = features @ self.weight.t() + self.bias + self.alpha * text_logits
                loss = nn.functional.cross_entropy(logits, labels)
                optimizer.zero_grad()  # W and b only: alpha's gradient keeps accumulating, as the reference's
                loss.backward()
                optimizer.step()
                if (epoch + 1) % self.alpha_every == 0:
                    with torch.no_grad():
                        self.alpha -= lr_alpha * self.alpha.grad
                losses.append(float(loss.detach()))
                if val is not None and self.select == "best_val":
                    acc = self._accuracy(*val, text)
                    if acc >= best_acc:
                        best_acc, best = acc, [p.detach().clone() for p in (self.weight, self.bias, self.alpha)]
        self.alpha.grad = None
        if best is not None:
            with torch.no_grad():
                for param, kept in zip((self.weight, self.bias, self.alpha), best):
                    param.copy_(kept)
        self.fitted.fill_(1)
        return losses

    def on_fit_start(self) -> None:
        if bool(self.fitted):
            return
        if self.augment_views:
            features, labels, _ = augmented_train_features(self, self.augment_views, self.feature_batch_size)
            train = (nn.functional.normalize(features, dim=-1), labels)
            val = val_features(self, self.feature_batch_size)
        else:
            train, val = split_features(self, self.feature_batch_size)
        self.fit_head(*train, val=val)
        self.trainer.should_stop = True  # fitted: one validation-only epoch is enough

    def configure_optimizers(self) -> Any:
        return None  # the fit happens on cached features in on_fit_start

    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None
