"""The FLYP contrastive loss with a choice of targets for same-class pairs.

In a classification batch several images share a class, hence an identical text prompt.
Plain CLIP (``arange``) treats those pairs as negatives, pushing apart what should match.
``multi_positive`` (default) spreads the target over every same-class column;
``mask_same_class`` drops the off-diagonal same-class logits instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipft.errors import ConfigError

TARGET_MODES = ("multi_positive", "mask_same_class", "arange")


def contrastive_targets(labels: torch.Tensor, mode: str = "multi_positive") -> torch.Tensor:
    """Row-stochastic B x B target matrix for image->text (its transpose serves text->image)."""
    n = labels.shape[0]
    if mode == "arange" or mode == "mask_same_class":
        return torch.eye(n, device=labels.device)
    if mode == "multi_positive":
        same = (labels[:, None] == labels[None, :]).float()
        return same / same.sum(dim=1, keepdim=True)
    raise ConfigError(f"model.contrastive_target={mode!r} is not one of {list(TARGET_MODES)}")


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor | float,
    mode: str = "multi_positive",
) -> torch.Tensor:
    """Symmetric CLIP loss between paired, L2-normalised image and text features.

    ``text_features[i]`` is the prompt of ``labels[i]``; ``logit_scale`` is the (already
    exponentiated) inverse temperature.
    """
    logits = logit_scale * image_features @ text_features.t()
    targets = contrastive_targets(labels, mode)
    if mode == "mask_same_class":
        same = labels[:, None] == labels[None, :]
        off_diag = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        logits = logits.masked_fill(off_diag, float("-inf"))
    loss_i2t = _soft_cross_entropy(logits, targets)
    loss_t2i = _soft_cross_entropy(logits.t(), targets.t())
    return 0.5 * (loss_i2t + loss_t2i)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    log_probs = F.log_softmax(logits.float(), dim=-1)
    # 0 * -inf is nan: masked entries carry zero target mass, so zero them explicitly.
    terms = torch.where(targets > 0, targets * log_probs, torch.zeros_like(log_probs))
    return -terms.sum(dim=-1).mean()


LOSSES = ("softmax", "sigmoid")


def sigmoid_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float = 0.0,
    mode: str = "multi_positive",
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): every image-text pair is a binary match.

    ``-sum_ij log sigmoid(z_ij * (scale * x_i . y_j + bias)) / B`` with ``z_ij = +1`` for a match.
    A match is the same class (``multi_positive``) or the pair's own caption only (``arange``).
    ``mask_same_class`` scores own pairs as matches and drops same-class off-diagonal pairs.
    """
    if mode not in TARGET_MODES:
        raise ConfigError(f"contrastive_target={mode!r} is not one of {list(TARGET_MODES)}")
    logits = (logit_scale * image_features @ text_features.t() + logit_bias).float()
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    same = labels[:, None] == labels[None, :]
    positive = same if mode == "multi_positive" else eye
    signs = positive.float() * 2 - 1
    terms = F.logsigmoid(signs * logits)
    if mode == "mask_same_class":
        terms = terms.masked_fill(same & ~eye, 0.0)
    return -terms.sum() / len(labels)
