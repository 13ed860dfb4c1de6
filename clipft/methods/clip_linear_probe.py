"""CLIPLinearProbe: a frozen CLIP-style image tower with a logistic-regression head.

Features of the train and validation images (evaluation transform, no augmentation) are
extracted **once** at the start of ``fit``; a multinomial logistic regression is fitted for
each inverse regularisation strength ``C`` in the sweep and the one with the best validation
accuracy is copied into an ``nn.Linear`` head (the CLIP paper's protocol, in seconds). The
Lightning epoch that follows only runs validation, so checkpoints, metrics and ``eval.py``
work as for every other module. The head reads L2-normalised image embeddings, the same
features :class:`~clipft.methods.LinearHeadFineTune` classifies, so LP-FT can start from this checkpoint.
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
from clipft.methods.features import eval_loader, image_features
from clipft.utils.instantiate import instantiate

log = logging.getLogger(__name__)

NO_OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 1.0e-3}


class CLIPLinearProbe(ClassificationModule):
    """Frozen backbone + linear head fitted by logistic regression.

    Args:
        class_names: dataset classes, in label order.
        clip: backbone config (any CLIP-style backbone: HF, open_clip, dual encoder).
        c_values: logistic-regression ``C`` sweep (inverse L2 strength), picked on validation accuracy.
        max_iter: L-BFGS iterations per fit.
        feature_batch_size: batch size of the one-off feature extraction.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        clip: dict[str, Any],
        c_values: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0),
        max_iter: int = 1000,
        feature_batch_size: int = 128,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(class_names, optimizer or dict(NO_OPTIMIZER), None)
        self.save_hyperparameters()
        c_values = [float(c) for c in c_values]
        if not c_values or any(c <= 0 for c in c_values):
            raise ConfigError(f"c_values must be a non-empty list of positive numbers, got {c_values}")
        self.c_values = c_values
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
        self.probe_scores: dict[str, float] = {}

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.backbone.preprocessing)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.encode_image(images))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.weight.detach().float(), self.head.bias.detach().float()

    def train(self, mode: bool = True) -> CLIPLinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    # ------------------------------------------------------------------ fitting
    def extract_features(self, loader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = image_features(self.backbone, loader, self.device)
        return feats.numpy(), labels.numpy()

    def fit_head(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None) -> float:
        """Sweep ``C``, keep the best on validation (on train when there is no validation set)."""
        from sklearn.linear_model import LogisticRegression

        x_tr, y_tr = train
        x_va, y_va = val if val is not None and len(val[1]) else train
        best: tuple[float, float, Any] | None = None
        for c in self.c_values:
            clf = LogisticRegression(C=c, max_iter=self.max_iter)
            clf.fit(x_tr, y_tr)
            score = float((clf.predict(x_va) == y_va).mean())
            self.probe_scores[f"C={c:g}"] = score
            log.info("linear probe C=%g: validation accuracy %.4f", c, score)
            if best is None or score > best[0]:
                best = (score, c, clf)
        assert best is not None
        score, c, clf = best
        weight, bias = _full_head(clf, self.num_classes, x_tr.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=self.head.weight.dtype))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))
            self.selected_c.fill_(c)
        log.info("linear probe: selected C=%g (validation accuracy %.4f)", c, score)
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
