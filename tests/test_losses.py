"""The contrastive loss's target modes against hand-written references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipft.methods.losses import contrastive_loss, contrastive_targets


def _features(n: int = 5, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_arange_is_the_plain_clip_loss():
    image, text = _features()
    labels = torch.tensor([0, 0, 1, 2, 1])
    logits = 7.0 * image @ text.t()
    target = torch.arange(5)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    torch.testing.assert_close(contrastive_loss(image, text, labels, 7.0, "arange"), expected)


def test_mask_same_class_drops_same_class_negatives():
    image, text = _features()
    labels = torch.tensor([0, 0, 1, 2, 1])
    logits = 7.0 * image @ text.t()
    rows = []
    for i in range(5):  # image i against every text except other same-class ones
        keep = [j for j in range(5) if j == i or labels[j] != labels[i]]
        rows.append(-F.log_softmax(logits[i, keep], 0)[keep.index(i)])
    cols = []
    for j in range(5):
        keep = [i for i in range(5) if i == j or labels[i] != labels[j]]
        cols.append(-F.log_softmax(logits[keep, j], 0)[keep.index(j)])
    expected = 0.5 * (torch.stack(rows).mean() + torch.stack(cols).mean())
    torch.testing.assert_close(contrastive_loss(image, text, labels, 7.0, "mask_same_class"), expected)


def test_modes_agree_when_every_label_is_distinct():
    image, text = _features()
    labels = torch.arange(5)
    losses = [contrastive_loss(image, text, labels, 5.0, m) for m in ("arange", "mask_same_class", "multi_positive")]
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(losses[0], losses[2])
    assert torch.equal(contrastive_targets(labels, "multi_positive"), torch.eye(5))


def test_multi_positive_loss_drops_when_same_class_features_align():
    labels = torch.tensor([0, 0, 1, 1])
    image = torch.nn.Parameter(torch.randn(4, 6))
    text = F.normalize(torch.randn(2, 6), dim=-1)[labels]
    opt = torch.optim.SGD([image], lr=0.5)
    first = None
    for _ in range(30):
        loss = contrastive_loss(F.normalize(image, dim=-1), text, labels, 10.0, "multi_positive")
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_sigmoid_loss_matches_a_hand_computed_value_and_its_target_modes():
    import math

    from clipft.methods.losses import sigmoid_contrastive_loss

    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    # logits = 2 * I - 1: own pairs 1 (matches), others -1 (non-matches): every term is log sigmoid(1)
    got = sigmoid_contrastive_loss(image, text, labels, 2.0, -1.0, "arange")
    want = -4 * math.log(1 / (1 + math.exp(-1.0))) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)
    same = torch.tensor([0, 0])
    multi = sigmoid_contrastive_loss(image, text, same, 2.0, -1.0, "multi_positive")  # all four pairs match
    want_multi = -(2 * math.log(1 / (1 + math.exp(-1.0))) + 2 * math.log(1 / (1 + math.exp(1.0)))) / 2
    assert float(multi) == pytest.approx(want_multi, rel=1e-6)
    masked = sigmoid_contrastive_loss(image, text, same, 2.0, -1.0, "mask_same_class")  # off-diagonal pairs dropped
    assert float(masked) == pytest.approx(-2 * math.log(1 / (1 + math.exp(-1.0))) / 2, rel=1e-6)
