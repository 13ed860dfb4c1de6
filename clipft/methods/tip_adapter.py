"""Tip-Adapter and Tip-Adapter-F (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP", ECCV 2022).

A key-value cache of the training images: keys are their normalised image features, values
their one-hot labels. A test image's logits are the zero-shot logits plus
``alpha * exp(-beta * (1 - f @ keys.T)) @ values``. So ``alpha = 0`` is zero-shot exactly, and
``beta`` sharpens the affinities. The training-free variant builds the cache once at the start
of fit and stops. Tip-Adapter-F (``finetune_keys: true``) trains the keys with cross-entropy
for the configured epochs. ``alpha`` and ``beta`` are chosen on val from ``search_alpha`` x
``search_beta`` (or the reference's linear grid, ``search_scale`` / ``search_step``): once for the
training-free cache, and for Tip-Adapter-F before every validation, for the keys as they stand, so
that each checkpoint carries the pair chosen for its own keys and the best epoch is picked with it.
(The reference searches once, after reloading its best epoch; a single search after training tuned
the last epoch's keys, and test, eval.py and predict reload the best checkpoint, whose pair was
then the initial one.)

After the reference implementation, github.com/gaopengcuhk/Tip-Adapter @ d0e2d6f8 (``main.py``,
``utils.py``, ``configs/*.yaml``); every departure is a named switch:

- ``alpha: 1.17``, ``beta: 1`` (the pair the keys train at, and the one kept without a val split): the
  repository's ``init_alpha`` / ``init_beta`` for ImageNet (configs/imagenet.yaml:20-21). ``init_beta`` is
  1 for every dataset; ``init_alpha`` is 1.17 (ImageNet, Food101, OxfordPets, SUN397), 2 (DTD, EuroSAT),
  3 (Caltech101, StanfordCars, UCF101), 5 (FGVC) or 10 (Flowers). (clipft used alpha 1, beta 5.5, which
  none of the repository's configs set.)
- ``normalize_keys: false`` (default): the trained keys are used raw, as the reference's
  ``adapter.weight`` (main.py:69-70, 91); they are normalised once, when the cache is built
  (utils.py:59-60). ``true``: clipft's old variant, keys renormalised on every forward (the gradient
  then has no radial part). Checkpoints written before the switch existed load with ``true``, the rule
  they were trained under.
- ``search_scale: [beta_scale, alpha_scale]``, ``search_step: [beta_steps, alpha_steps]``: the reference's
  grid ``i * (scale - 0.1) / steps + 0.1`` for ``i < steps`` (utils.py:103-104; ImageNet: scale [7, 3],
  step [200, 20]), replacing ``search_alpha`` / ``search_beta``. Both search beta outer, alpha inner, and
  keep the first best (utils.py:109-125).
- ``augment_views: 0`` (default): each key is one view of its image with the evaluation transform.
  ``K >= 1``: the mean of ``K`` unnormalised views with the datamodule's training transform,
  normalised (the reference: ``augment_epoch: 10``, utils.py:46-60).
- The optimiser and schedule are the config's (``clip_tip_adapter.yaml``): AdamW lr 1e-3, eps 1e-4,
  weight decay 0.01 (torch's AdamW default, which main.py:72 keeps), cosine per step from the start
  with no warm-up (main.py:73, 106). Epochs and batch are the trainer's and the datamodule's (the
  reference: 20 epochs, EuroSAT 100; batch 256, shuffled, training transform: main.py:173-181).
- Not switches: the zero-shot logits use the backbone's ``exp(logit_scale)`` (clamped at 100; the
  reference hard-codes 100, main.py:93, the same for OpenAI CLIP); the cache is fp32 (the reference:
  fp16, main.py:69, utils.py:62); the best epoch is picked on val (the reference: on test, main.py:114-124).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.clap import augmented_train_features
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.features import split_features, val_features


class TipAdapter(CLIPMethod):
    """Zero-shot head + a cache of the training features (keys fixed, or trained with ``finetune_keys``).

    Args:
        alpha, beta: cache weight and sharpness (the pair the keys train at; kept when no val split exists).
        finetune_keys: Tip-Adapter-F: the keys are parameters trained with cross-entropy.
        search_alpha, search_beta: grids searched on val after the cache is built / trained ([]: keep alpha, beta).
        search_scale, search_step: ``[beta, alpha]``: the reference's linear grids instead (null: the lists above).
        normalize_keys: renormalise the keys on every forward (clipft's old variant; the reference: false).
        augment_views: 0 = keys from one evaluation-transform view; K = the mean of K training-transform views.
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod` (towers always frozen).
    """

    reads_image_features = True  # frozen image tower, read through image_features(): a feature bank may serve it

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing")

    def __init__(
        self,
        *args: Any,
        alpha: float = 1.17,
        beta: float = 1.0,
        finetune_keys: bool = False,
        search_alpha: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
        search_beta: Sequence[float] = (1.0, 3.0, 5.5, 8.0, 12.0),
        feature_batch_size: int = 128,
        search_scale: Sequence[float] | None = None,
        search_step: Sequence[int] = (200, 20),
        normalize_keys: bool = False,
        augment_views: int = 0,
        **kwargs: Any,
    ) -> None:
        if float(alpha) < 0 or float(beta) < 0:
            raise ConfigError(f"alpha={alpha} and beta={beta} must be >= 0")
        if search_scale is not None and (len(search_scale) != 2 or len(search_step) != 2 or min(int(n) for n in search_step) < 1):
            raise ConfigError(f"search_scale={search_scale} and search_step={search_step} must be [beta, alpha] pairs, steps >= 1")
        if int(augment_views) < 0:
            raise ConfigError(f"augment_views={augment_views} must be >= 0")
        super().__init__(*args, freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True, **kwargs)
        self.finetune_keys = bool(finetune_keys)
        if search_scale is not None:  # the reference's grids (utils.py:103-104)
            search_beta, search_alpha = (reference_grid(float(scale), int(steps)) for scale, steps in zip(search_scale, search_step))
        self.search_alpha, self.search_beta = [float(a) for a in search_alpha], [float(b) for b in search_beta]
        self.feature_batch_size = int(feature_batch_size)
        self.normalize_keys, self.augment_views = bool(normalize_keys), int(augment_views)
        # persisted so that a checkpoint from before the switch (keys renormalised in forward) loads with it on
        self.register_buffer("keys_renormalised", torch.tensor(self.normalize_keys))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("beta", torch.tensor(float(beta)))
        dim = int(self.backbone.embed_dim)
        # sized by the training set at fit time; a checkpoint's own sizes are restored in _load_from_state_dict
        self.cache_keys = nn.Parameter(torch.zeros(0, dim), requires_grad=self.finetune_keys)
        self.register_buffer("cache_values", torch.zeros(0, self.num_classes))
        self.cache_scores: dict[str, float] = {}

    # ------------------------------------------------------------------ cache
    def _allocate(self, size: int) -> None:
        self.cache_keys = nn.Parameter(torch.zeros(size, self.cache_keys.shape[1], device=self.device), requires_grad=self.finetune_keys)
        self.cache_values = torch.zeros(size, self.num_classes, device=self.device)

    @torch.no_grad()
    def build_cache(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Fill the cache in place (the optimiser of Tip-Adapter-F already holds the keys)."""
        if self.cache_keys.shape[0] != len(features):
            self._allocate(len(features))
        self.cache_keys.copy_(nn.functional.normalize(features.float(), dim=-1).to(self.device))
        self.cache_values.copy_(nn.functional.one_hot(labels.long(), self.num_classes).float().to(self.device))

    def cache_logits(self, image: torch.Tensor, beta: torch.Tensor | float | None = None) -> torch.Tensor:
        beta = self.beta if beta is None else beta
        keys = nn.functional.normalize(self.cache_keys, dim=-1) if self.normalize_keys else self.cache_keys
        affinity = image.float() @ keys.t()
        return torch.exp(-beta * (1.0 - affinity)) @ self.cache_values

    def zeroshot_logits(self, image: torch.Tensor) -> torch.Tensor:
        text = self._eval_text_features if self._eval_text_features is not None else self.frozen_class_text()
        return self.logit_scale() * image.float() @ text.float().t()

    @torch.no_grad()
    def search(self, val: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Pick (alpha, beta) with the best val accuracy over the grids (ties: the first, i.e. smallest alpha)."""
        if val is None or not self.search_alpha or not self.search_beta:
            return
        image, labels = val[0].to(self.device), val[1].to(self.device)
        zeroshot = self.zeroshot_logits(image)
        best = None
        for beta in self.search_beta:
            cache = self.cache_logits(image, beta)
            # one device sync per beta (the reference's grid is 200 x 20)
            accs = torch.stack([((zeroshot + alpha * cache).argmax(-1) == labels).float().mean() for alpha in self.search_alpha])
            for alpha, acc in zip(self.search_alpha, accs.tolist()):
                self.cache_scores[f"alpha={alpha:g},beta={beta:g}"] = acc
                if best is None or acc > best[0]:
                    best = (acc, alpha, beta)
        _, alpha, beta = best
        self.alpha.fill_(alpha)
        self.beta.fill_(beta)

    # ------------------------------------------------------------------ lifecycle
    def setup(self, stage: str) -> None:
        """Size the cache before the optimiser is built (the keys are Tip-Adapter-F's parameters)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and not self.cache_keys.shape[0] and dm is not None and hasattr(dm, "train_samples"):
            self._allocate(len(dm.train_samples))
            self._cache_filled = False

    def configure_optimizers(self) -> Any:
        return super().configure_optimizers() if self.finetune_keys else None  # training-free: nothing to optimise

    def on_fit_start(self) -> None:
        if self.cache_keys.shape[0] and getattr(self, "_cache_filled", True):  # resumed with a cache
            # the generators were restored to where the uninterrupted run stood; iterating a loader draws a
            # seed from them, so the extra val pass forks them to leave the resumed run's draws unchanged
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                self._val_features = val_features(self, self.feature_batch_size) if self.finetune_keys else None
            return
        if self.augment_views:  # keys: the mean of the unnormalised augmented views (build_cache normalises)
            views, labels, size = augmented_train_features(self, self.augment_views, self.feature_batch_size)
            train, val = (views.view(self.augment_views, size, -1).mean(0), labels[:size]), val_features(self, self.feature_batch_size)
        else:
            train, val = split_features(self, self.feature_batch_size)
        self.build_cache(*train)
        self._cache_filled = True
        self._val_features = val
        if not self.finetune_keys:  # training-free: the cache is the model
            self.search(val)
            self.trainer.should_stop = True

    def on_validation_start(self) -> None:
        if self.finetune_keys:  # before val is scored and the checkpoint written (module docstring)
            self.search(getattr(self, "_val_features", None))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("cache_keys", "cache_values"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None and getattr(self, name).shape != incoming.shape:
                if name == "cache_keys":
                    self.cache_keys = nn.Parameter(torch.zeros_like(incoming), requires_grad=self.finetune_keys)
                else:
                    self.cache_values = torch.zeros_like(incoming)
        if prefix + "cache_keys" in state_dict:
            if prefix + "keys_renormalised" not in state_dict:
                # written before normalize_keys existed: every forward renormalised the keys, so keep doing it
                self.normalize_keys = True
            state_dict[prefix + "keys_renormalised"] = torch.tensor(self.normalize_keys)  # else the hyper-parameter rules
        restored_keys = state_dict.get(prefix + "cache_keys")
        if restored_keys is not None and restored_keys.shape[0]:
            # a resume restores the weights after setup() sized an empty cache: the restored keys (trained,
            # for Tip-Adapter-F) are the cache, and on_fit_start must not rebuild it from the data
            self._cache_filled = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ steps
    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": [("cache_keys", self.cache_keys)]} if self.finetune_keys else {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = self.image_features(images)
        logits = self.zeroshot_logits(image)
        if self.cache_keys.shape[0]:
            # Tip-Adapter-F trains its keys at the configured pair, as the reference does (a searched
            # alpha of 0 would stop their gradient); the searched pair in the buffers is for inference
            alpha, beta = (float(self.hparams.alpha), float(self.hparams.beta)) if self.training else (self.alpha, self.beta)
            logits = logits + alpha * self.cache_logits(image, beta)
        return logits

    def linear_head(self) -> None:
        return None  # the cache's exp(-beta (1 - cos)) affinities are not linear in the embedding

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return super().training_step(batch, batch_idx) if self.finetune_keys else None  # training-free: nothing to step


def reference_grid(scale: float, steps: int) -> list[float]:
    """The reference's search grid: ``steps`` points ``i * (scale - 0.1) / steps + 0.1`` (``scale`` itself excluded)."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]
