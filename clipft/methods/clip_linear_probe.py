"""CLIPLinearProbe: a frozen CLIP-style image tower with a logistic-regression head.

Features of the train and validation images (evaluation transform, no augmentation) are
extracted **once** at the start of ``fit``; a multinomial logistic regression (scikit-learn,
L-BFGS, L2, ``max_iter`` 1000) is fitted per inverse regularisation strength ``C`` and the one
with the best validation accuracy is copied into an ``nn.Linear`` head. The Lightning epoch that
follows only runs validation, so checkpoints, metrics and ``eval.py`` work as for every other module.

The defaults follow the reference few-shot protocol, CoOp's ``lpclip`` (KaiyangZhou/CoOp @ ff61507,
``lpclip/linear_probe.py``; the CLIP paper's appendix A.3), which ``docs/clip_methods.md`` compares
aspect by aspect:

- ``feature_norm: none``: the head reads the raw projected image embedding, as ``lpclip/feat_extractor.py:155``
  (``clip_model.visual(images)``) and the CLIP README's example (``model.encode_image``) do. ``l2``
  reads the L2-normalised embedding (clipft's behaviour before; the features LP-FT and the HF /
  open_clip exports expect: ``linear_head()`` is None for ``none``).
- ``c_search: reference``: ``C`` in ``1e6, 1e4, ..., 1e-6`` (ties: the largest ``C``), then
  ``search_steps`` (8) bisection steps in log10 space over ``[peak/10, peak*10]``, each fitting both
  ends and keeping the better one (ties: the smaller); the last step's classifier is the probe
  (``lpclip/linear_probe.py:53-118``). ``grid``: one pass over ``c_values`` (default
  ``0.1 ... 1000``, clipft's grid before), ties to the smallest ``C``.
- features are fitted in float64 (the reference's ``np.savez`` of Python floats).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.classification import ClassificationModule
from clipft.methods.features import encode_or_pass, eval_loader, image_features
from clipft.utils.instantiate import instantiate

log = logging.getLogger(__name__)

NO_OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 1.0e-3}
FEATURE_NORMS = ("none", "l2")
C_SEARCHES = ("reference", "grid")
TIES = ("largest", "smallest")
# CoOp lpclip/linear_probe.py:54 (its order; ties go to the first, the largest C)
REFERENCE_C_VALUES = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
# clipft's sweep before the reference protocol became the default (c_search: grid)
GRID_C_VALUES = (0.1, 1.0, 10.0, 100.0, 1000.0)


class CLIPLinearProbe(ClassificationModule):
    """Frozen backbone + linear head fitted by logistic regression.

    Args:
        clip: backbone config (any CLIP-style backbone: HF, open_clip, dual encoder).
        c_values: the ``C`` sweep (inverse L2 strength), picked on validation accuracy; null: the
            ``c_search`` preset's (:data:`REFERENCE_C_VALUES` / :data:`GRID_C_VALUES`).
        max_iter: L-BFGS iterations per fit (1000, as the reference).
        feature_batch_size: batch size of the one-off feature extraction.
        feature_norm: ``none`` (raw image embedding, the reference) | ``l2`` (normalised).
        c_search: ``reference`` (sweep, then ``search_steps`` bisection steps) | ``grid`` (the sweep only).
        search_steps: bisection steps after the sweep (``reference`` only; 8 as ``lpclip/linear_probe.sh``).
        ties: which ``C`` of equal validation accuracy the sweep keeps: ``largest`` | ``smallest``;
            null: ``largest`` for ``reference``, ``smallest`` for ``grid``.
        optimizer, scheduler: unused (the probe is fitted by L-BFGS on cached features).
        Every other argument: :class:`~clipft.methods.classification.ClassificationModule`.
    """

    reads_image_features = True  # frozen image tower, read through image_features(): a feature bank may serve it

    passes_on = ("class_names",)

    def __init__(
        self,
        *args: Any,
        clip: dict[str, Any],
        c_values: Sequence[float] | None = None,
        max_iter: int = 1000,
        feature_batch_size: int = 128,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        feature_norm: str = "none",
        c_search: str = "reference",
        search_steps: int = 8,
        ties: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, optimizer=optimizer or dict(NO_OPTIMIZER), scheduler=None, **kwargs)
        if feature_norm not in FEATURE_NORMS:
            raise ConfigError(f"feature_norm={feature_norm!r} is not one of {list(FEATURE_NORMS)}")
        if c_search not in C_SEARCHES:
            raise ConfigError(f"c_search={c_search!r} is not one of {list(C_SEARCHES)}")
        ties = ties or ("largest" if c_search == "reference" else "smallest")
        if ties not in TIES:
            raise ConfigError(f"ties={ties!r} is not one of {list(TIES)}")
        if int(search_steps) < 0:
            raise ConfigError(f"search_steps must be >= 0, got {search_steps}")
        if c_values is None:
            c_values = REFERENCE_C_VALUES if c_search == "reference" else GRID_C_VALUES
        c_values = [float(c) for c in c_values]
        if not c_values or any(c <= 0 for c in c_values):
            raise ConfigError(f"c_values must be a non-empty list of positive numbers, got {c_values}")
        self.c_values = c_values
        self.c_search, self.ties = c_search, ties
        self.search_steps = int(search_steps) if c_search == "reference" else 0
        self.max_iter = int(max_iter)
        self.feature_batch_size = int(feature_batch_size)
        self.backbone = instantiate(clip)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        with torch.no_grad():
            dim = int(self.backbone.embed_dim)
        self.head = nn.Linear(dim, self.num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("selected_c", torch.zeros((), dtype=torch.float64))
        # what the head reads, kept with its weights (checkpoints from before feature_norm: normalised);
        # mirrored as a Python bool so that forward has no data-dependent branch (tracing, export)
        self.register_buffer("l2_features", torch.tensor(feature_norm == "l2"))
        self._l2 = feature_norm == "l2"
        self.probe_scores: dict[str, float] = {}

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.backbone.preprocessing)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The image embedding the head reads: raw, or L2-normalised (``feature_norm``)."""
        return encode_or_pass(self.backbone, images, normalize=self._l2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The head over the normalised embedding; None when it reads raw features (not one linear map of that)."""
        if not self._l2:
            return None
        return self.head.weight.detach().float(), self.head.bias.detach().float()

    def train(self, mode: bool = True) -> CLIPLinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # probes fitted before feature_norm existed read the normalised embedding
        state_dict.setdefault(prefix + "l2_features", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._l2 = bool(self.l2_features)

    # ------------------------------------------------------------------ fitting
    def extract_features(self, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = image_features(_Features(self), loader, self.device)
        return feats.numpy(), labels.numpy()

    def fit_head(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None) -> float:
        """Search ``C`` (``c_search``) on validation accuracy (on train when there is no validation set)."""
        x_tr, y_tr = np.asarray(train[0], dtype=np.float64), np.asarray(train[1])
        x_va, y_va = val if val is not None and len(val[1]) else train
        x_va, y_va = np.asarray(x_va, dtype=np.float64), np.asarray(y_va)
        fits: dict[float, tuple[float, Any]] = {}  # L-BFGS is deterministic: each C is fitted once

        def fit(c: float) -> tuple[float, Any]:
            if c not in fits:
                clf = _logistic_regression(c, self.max_iter).fit(x_tr, y_tr)
                score = float((clf.predict(x_va) == y_va).mean())
                fits[c] = (score, clf)
                self.probe_scores[f"C={c:.6g}"] = score
                log.info("linear probe C=%.6g: validation accuracy %.4f", c, score)
            return fits[c]

        scores = [fit(c)[0] for c in self.c_values]
        top = max(scores)
        tied = [c for c, s in zip(self.c_values, scores) if s == top]
        c = max(tied) if self.ties == "largest" else min(tied)
        low, high = 0.1 * c, 10.0 * c
        for _ in range(self.search_steps):  # lpclip/linear_probe.py:64-118, in log10 space
            mid = 0.5 * (np.log10(high) + np.log10(low))
            if fit(low)[0] < fit(high)[0]:
                c, low, high = high, float(np.power(10, mid)), float(np.power(10, np.log10(high)))
            else:
                c, low, high = low, float(np.power(10, np.log10(low))), float(np.power(10, mid))
        score, clf = fit(c)
        weight, bias = _full_head(clf, self.num_classes, x_tr.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=self.head.weight.dtype))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))
            self.selected_c.fill_(c)
        log.info("linear probe: selected C=%.6g (validation accuracy %.4f)", c, score)
        return score

    def on_fit_start(self) -> None:
        if float(self.selected_c) > 0:  # resumed from a fitted checkpoint
            return
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "make_dataset") and hasattr(dm, "train_samples"):
            train_loader = eval_loader(dm, dm.train_samples, self.feature_batch_size)
            val_loader = eval_loader(dm, dm.val_samples, self.feature_batch_size) if dm.val_samples else None
        else:
            train_loader, val_loader = self.trainer.fit_loop._data_source.dataloader(), None  # noqa: SLF001
        train = self.extract_features(train_loader)
        val = self.extract_features(val_loader) if val_loader is not None else None
        self.fit_head(train, val)
        self.trainer.should_stop = True  # the head is fitted: one (validation-only) epoch is enough

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """Nothing to optimise (the head is fitted in ``on_fit_start``): Lightning skips the step."""
        return None

    def named_parameter_groups(self) -> dict[str, Iterable[tuple[str, nn.Parameter]]]:
        return {"head": self.head.named_parameters()}


def _full_head(clf: Any, num_classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's coef_/intercept_ spread over every class (absent classes get a very low bias)."""
    weight = np.zeros((num_classes, dim), dtype=np.float64)
    bias = np.full((num_classes,), -1e4, dtype=np.float64)
    classes = list(clf.classes_)
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1 and len(classes) == 2:  # binary: one row for the positive class
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    for row, cls in enumerate(classes):
        weight[int(cls)] = coef[row]
        bias[int(cls)] = intercept[row]
    return weight, bias


def _logistic_regression(c: float, max_iter: int) -> Any:
    """Multinomial logistic regression, L-BFGS, L2 penalty: ``lpclip/linear_probe.py:57``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter)


class _Features:
    """The probe's backbone as :func:`~clipft.methods.features.image_features` sees it: its ``encode_image``
    gives the embedding the head reads (raw or normalised)."""

    reads_rows = True  # probe.features tells pixels from feature-bank rows itself

    def __init__(self, probe: CLIPLinearProbe) -> None:
        self.probe = probe

    def eval(self) -> None:
        self.probe.backbone.eval()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.probe.features(images)

