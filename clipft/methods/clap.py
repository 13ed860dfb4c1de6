"""CLAP: a zero-shot-initialised linear probe held near the text prototypes by a class-adaptive penalty
(Silva-Rodríguez et al., "A Closer Look at the Few-Shot Adaptation of Large Vision-Language Models", CVPR 2024).

The class weights ``W`` start at the class text prototypes ``T``, so epoch 0 is zero-shot. They are
fitted on the cached training features with
``CE(scale * f @ normalize(W).T, y) + mean_c lambda_c * ||w_c - t_c||^2``, where ``lambda_c`` is the
zero-shot model's mean probability for class ``c`` on its own training images. A class the text already
recognises stays near its prototype; a class it misses may move. No validation split and no
hyper-parameter search are needed: that is the method's point.

After the reference implementation, github.com/jusiro/CLAP @ dbdf4095 (``trainers/adapters.py``,
``configs/trainers/SGD_lr1e-1_B256_ep300.yaml``); every departure is a named switch:

- ``anchors: reference`` (default): ``T`` is the mean of the class's *raw* (unnormalised) prompt
  embeddings, as the reference's ``_get_base_text_features`` (adapters.py:126-127); ``W`` starts there and
  the penalty pulls it back there, so the penalty and the step size act on the embedding's own scale
  (CLIP's text embeddings have norm ~7-10). ``normalized``: clipft's old variant, the unit-norm zero-shot
  head (per-prompt normalised, averaged, renormalised). With one template both give the same logits at
  epoch 0; with several, ``reference`` starts at the normalised raw mean, which weights long prompts more.
- ``penalty_reduction: mean`` (default): the penalty is averaged over classes (adapters.py:230).
  ``sum``: clipft's old variant, C times stronger.
- SGD lr 0.1, momentum 0.9, no weight decay, 300 epochs; ``schedule: cosine`` over ``epochs`` after
  ``warmup_epochs: 1`` at constant ``warmup_lr: 1e-5``, stepped once per epoch (Dassl's
  ``ConstantWarmupScheduler`` + ``CosineAnnealingLR(T_max=MAX_EPOCH)``). ``schedule: constant`` and
  ``warmup_epochs: 0`` give clipft's old constant-rate fit (which ran at lr 0.01: 0.1 diverged with the
  unit-norm anchors and the summed penalty).
- ``batch_size: null`` (default): one full-batch step per epoch on the cached features (clipft's design:
  a few hundred steps on a tensor need no dataloader). An integer ``B``: each epoch shuffles the feature
  pool and takes ``max(N // B, 1)`` batches of ``B`` (``N`` training images), as the reference's
  ``run_epoch`` (adapters.py:430-456) with Dassl's ``drop_last = N >= B``; the reference uses 256.
- ``augment_views: 0`` (default): one view of each training image, with the evaluation transform.
  ``K >= 1``: ``K`` views with the datamodule's training transform, pooled (the reference: 20,
  adapters.py:143 and 537-538; lambda is then computed on the pooled views, as there).

The fit runs on the cached features in ``on_fit_start`` (hand-written loop), then fit stops.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError, DataError
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.features import encode_or_pass, split_features
from clipft.methods.zeroshot_head import eval_mode, raw_class_text

ANCHORS = ("reference", "normalized")
REDUCTIONS = ("mean", "sum")
SCHEDULES = ("cosine", "constant")


class CLAP(CLIPMethod):
    """Class-adaptive constrained linear probe over frozen towers.

    Args:
        epochs, lr, momentum: the SGD fit on the cached training features.
        constraint: ``adaptive`` (CLAP's per-class lambda) | ``none`` (ZS-LP: the zero-shot-initialised probe alone).
        penalty_reduction: ``mean`` (the reference) | ``sum`` (clipft's old variant) over classes.
        anchors: ``reference`` (raw mean prompt embedding) | ``normalized`` (the unit-norm zero-shot head).
        schedule, warmup_epochs, warmup_lr: per-epoch learning rate (cosine after a constant warm-up).
        batch_size: null = full batch; an integer = the reference's minibatches of the shuffled pool.
        augment_views: 0 = one evaluation-transform view; K = K training-transform views pooled.
        optimizer, scheduler: unused (the fit runs its own SGD and schedule).
        feature_batch_size: batch size of the one-off feature extraction.
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod`.
    """

    reads_image_features = True  # frozen image tower, read through image_features(): a feature bank may serve it

    passes_on = ("class_names", "clip", "prompts")

    def __init__(
        self,
        *args: Any,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        epochs: int = 300,
        lr: float = 0.1,
        momentum: float = 0.9,
        constraint: str = "adaptive",
        feature_batch_size: int = 128,
        penalty_reduction: str = "mean",
        anchors: str = "reference",
        schedule: str = "cosine",
        warmup_epochs: int = 1,
        warmup_lr: float = 1e-5,
        batch_size: int | None = None,
        augment_views: int = 0,
        **kwargs: Any,
    ) -> None:
        if constraint not in ("adaptive", "none"):
            raise ConfigError(f"constraint={constraint!r} must be 'adaptive' or 'none'")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1 or float(lr) <= 0:
            raise ConfigError(f"epochs={epochs!r} must be an integer >= 1 and lr={lr!r} positive")
        for name, value, allowed in (("penalty_reduction", penalty_reduction, REDUCTIONS), ("anchors", anchors, ANCHORS),
                                     ("schedule", schedule, SCHEDULES)):
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} must be one of {list(allowed)}")
        if int(warmup_epochs) < 0 or float(warmup_lr) < 0 or int(augment_views) < 0:
            raise ConfigError(f"warmup_epochs={warmup_epochs}, warmup_lr={warmup_lr} and augment_views={augment_views} must be >= 0")
        if batch_size is not None and int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size} must be null (full batch) or >= 1")
        super().__init__(
            *args, optimizer=optimizer or {"_target_": "torch.optim.SGD", "lr": float(lr)}, scheduler=None,
            freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True, **kwargs,
        )
        self.epochs, self.lr, self.momentum, self.constraint = int(epochs), float(lr), float(momentum), constraint
        self.feature_batch_size = int(feature_batch_size)
        self.penalty_reduction, self.anchors, self.schedule = penalty_reduction, anchors, schedule
        self.warmup_epochs, self.warmup_lr = int(warmup_epochs), float(warmup_lr)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.augment_views = int(augment_views)
        dim = int(self.backbone.embed_dim)
        self.weight = nn.Parameter(torch.zeros(self.num_classes, dim))
        self.register_buffer("penalty", torch.zeros(self.num_classes))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.long))
        self._anchor_text: torch.Tensor | None = None

    # ------------------------------------------------------------------ anchors
    @torch.no_grad()
    def raw_class_text(self) -> torch.Tensor:
        """Per class, the mean of its *unnormalised* prompt embeddings (the reference's ``base_text_features``)."""
        return raw_class_text(self.backbone, self.class_prompts, self.device)

    def anchor_text(self) -> torch.Tensor:
        """``T``: where the weights start and what the penalty holds them to (see ``anchors``)."""
        if self._anchor_text is None:
            text = self.raw_class_text() if self.anchors == "reference" else self.frozen_class_text()
            self._anchor_text = text.float().detach()
        return self._anchor_text.to(self.device)

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        super().set_prompts(prompts)
        self._anchor_text = None

    @torch.no_grad()
    def initialise_weight(self) -> None:
        if not bool(self.fitted):
            self.weight.copy_(self.anchor_text().to(self.weight))

    def prepare_for_inference(self) -> None:
        self.initialise_weight()  # an unfitted CLAP is the zero-shot classifier

    # ------------------------------------------------------------------ logits
    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """A cosine classifier: the weights are normalised, as the text prototypes they start from."""
        return self.logit_scale() * features.float() @ nn.functional.normalize(self.weight, dim=-1).t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.class_logits(self.image_features(images))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        weight = (self.logit_scale() * nn.functional.normalize(self.weight.float(), dim=-1)).detach()
        return weight, torch.zeros(weight.shape[0], device=weight.device)

    # ------------------------------------------------------------------ the fit
    def class_penalty(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """lambda_c: the initial (zero-shot) model's mean probability of class c on its own training images."""
        with torch.no_grad():
            head = nn.functional.normalize(self.anchor_text(), dim=-1)
            probs = (self.logit_scale() * features.float() @ head.t()).softmax(-1)
            penalty = torch.zeros(self.num_classes, device=features.device)
            for c in labels.unique():
                penalty[c] = probs[labels == c, c].mean()
        return penalty

    def constraint_loss(self) -> torch.Tensor:
        """``reduce_c lambda_c ||w_c - t_c||^2`` (reduce: ``penalty_reduction``)."""
        per_class = self.penalty * ((self.weight - self.anchor_text()) ** 2).sum(-1)
        return per_class.mean() if self.penalty_reduction == "mean" else per_class.sum()

    def lr_at(self, epoch: int) -> float:
        """The rate of epoch ``epoch`` (0-based): ``warmup_lr`` for the warm-up epochs, then cosine over ``epochs``."""
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        if self.schedule == "constant":
            return self.lr
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * (epoch - self.warmup_epochs) / self.epochs))

    def fit_weight(self, features: torch.Tensor, labels: torch.Tensor, images: int | None = None) -> list[float]:
        """The constrained fit; returns the loss of each epoch's last step.

        ``images``: how many distinct training images the pool holds (it sizes the minibatches per epoch,
        as the reference's loader length does); default: every row of ``features`` is one image.
        """
        features, labels = features.to(self.device).float(), labels.to(self.device)
        images = len(features) if images is None else int(images)
        self.initialise_weight()
        if self.constraint == "adaptive":
            self.penalty.copy_(self.class_penalty(features, labels))
        optimizer = torch.optim.SGD([self.weight], lr=self.lr_at(0), momentum=self.momentum)
        per_epoch = 1 if self.batch_size is None else max(images // self.batch_size, 1)
        losses = []
        with torch.enable_grad():
            for epoch in range(self.epochs):
                for group in optimizer.param_groups:
                    group["lr"] = self.lr_at(epoch)
                if self.batch_size is None:
                    batches = [None]
                else:  # the global generator (seed_everything): the draw follows the run's seed
                    order = torch.randperm(len(features)).to(self.device)
                    batches = [order[b * self.batch_size : (b + 1) * self.batch_size] for b in range(per_epoch)]
                for index in batches:
                    x, y = (features, labels) if index is None else (features[index], labels[index])
                    loss = nn.functional.cross_entropy(self.class_logits(x), y)
                    if self.constraint == "adaptive":
                        loss = loss + self.constraint_loss()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                losses.append(float(loss.detach()))
        self.fitted.fill_(1)
        return losses

    def on_fit_start(self) -> None:
        if bool(self.fitted):
            return
        if self.augment_views:
            features, labels, images = augmented_train_features(self, self.augment_views, self.feature_batch_size)
            features = nn.functional.normalize(features, dim=-1)
        else:
            (features, labels), _ = split_features(self, self.feature_batch_size)
            images = len(features)
        self.fit_weight(features, labels, images)
        self.trainer.should_stop = True  # fitted: one validation-only epoch is enough

    def configure_optimizers(self) -> Any:
        return None  # the fit happens on cached features in on_fit_start

    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None


@torch.no_grad()
def augmented_train_features(module: Any, views: int, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(features, labels, N)``: ``views`` passes over the ``N`` training images with the datamodule's
    *training* transform, view-major (``features[v * N + i]`` is view ``v`` of image ``i``), unnormalised
    image embeddings on the CPU. What CLAP's and Tip-Adapter's references extract (20 / 10 augmented views)."""
    dm = module.trainer.datamodule
    if dm is None or not hasattr(dm, "train_samples"):
        raise DataError(f"{type(module).__name__} extracts features from a clipft datamodule's splits; fit it with datamodule=")
    loader = torch.utils.data.DataLoader(
        dm.make_dataset(dm.train_samples, train=True), batch_size=batch_size, shuffle=False,
        num_workers=getattr(dm, "num_workers", 0),
    )
    on_device = dm.transform(train=True) if getattr(dm, "augment_on_device", False) else None
    backbone = module.backbone
    feats, labels = [], []
    with eval_mode(backbone):
        for _ in range(int(views)):
            for batch in loader:
                pixels = batch[0].to(module.device)
                if on_device is not None and pixels.dim() == 4:  # the datamodule augments on the device
                    pixels = torch.stack([on_device(image) for image in pixels])
                # a feature bank training from stored views serves rows: each pass reads one stored view per image
                feats.append(encode_or_pass(backbone, pixels, normalize=False).float().cpu())
                labels.append(torch.as_tensor(batch[1]).cpu())
    if not feats:
        raise DataError("the training split yielded no images")
    return torch.cat(feats), torch.cat(labels), len(dm.train_samples)
