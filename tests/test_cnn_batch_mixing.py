"""MixUp / CutMix: soft labels must weigh each class by exactly its share of the mixed image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipft.errors import ConfigError
from clipft.methods.batch_mixing import BatchMixer

NUM_CLASSES = 6


def constant_batch(n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image i is the constant value[label_i]; labels are distinct, so pixel means reveal the mix."""
    labels = torch.randperm(NUM_CLASSES)[:n]
    value = torch.linspace(0.0, 5.0, NUM_CLASSES)
    images = value[labels][:, None, None, None].expand(n, 3, size, size).clone()
    return images, labels, value


@pytest.mark.parametrize("method", ["mixup", "cutmix"])
def test_soft_labels_match_the_mixed_pixels(method):
    torch.manual_seed(0)
    kwargs = {"mixup_alpha": 0.4} if method == "mixup" else {"cutmix_alpha": 1.0}
    mixer = BatchMixer(NUM_CLASSES, prob=1.0, **kwargs)
    for _ in range(5):
        images, labels, value = constant_batch()
        mixed, soft, was_mixed = mixer(images, labels)
        assert was_mixed and soft.shape == (len(labels), NUM_CLASSES)
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(len(labels)))
        # every pixel is a convex mix of class values, so the mean is soft @ value
        torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), soft @ value, rtol=1e-4, atol=1e-4)
        # only the own class and the partner's (torchvision rolls the batch by one) get weight
        partner = labels.roll(1)
        own_and_partner = soft.gather(1, labels[:, None]).squeeze(1) + soft.gather(1, partner[:, None]).squeeze(1)
        torch.testing.assert_close(own_and_partner, torch.ones(len(labels)))


def test_cutmix_pastes_a_box_and_mixup_blends_everywhere():
    torch.manual_seed(1)
    images, labels, value = constant_batch()
    mixed, soft, _ = BatchMixer(NUM_CLASSES, cutmix_alpha=1.0)(images, labels)
    for i in range(len(labels)):  # CutMix: every pixel is one of the two originals
        pixels = set(mixed[i].unique().tolist())
        assert pixels <= {value[labels[i]].item(), value[labels.roll(1)[i]].item()}
    mixed, soft, _ = BatchMixer(NUM_CLASSES, mixup_alpha=1.0)(images, labels)
    assert all(len(mixed[i].unique()) == 1 for i in range(len(labels)))  # MixUp: one blended value per image


def test_prob_and_switch():
    images, labels, _ = constant_batch()
    same, hard, was_mixed = BatchMixer(NUM_CLASSES, mixup_alpha=1.0, prob=0.0)(images, labels)
    assert not was_mixed and same is images and hard is labels
    off = BatchMixer(NUM_CLASSES)
    assert not off.enabled and off(images, labels)[2] is False
    torch.manual_seed(0)
    both = BatchMixer(NUM_CLASSES, mixup_alpha=1.0, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
    kinds = set()
    for _ in range(20):
        mixed, _, _ = both(images, labels)
        kinds.add("mixup" if all(len(m.unique()) == 1 for m in mixed) else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_soft_labels_work_with_label_smoothing_cross_entropy():
    torch.manual_seed(0)
    images, labels, _ = constant_batch()
    _, soft, _ = BatchMixer(NUM_CLASSES, mixup_alpha=0.4)(images, labels)
    logits = torch.randn(len(labels), NUM_CLASSES)
    loss = F.cross_entropy(logits, soft, label_smoothing=0.1)
    smoothed = soft * 0.9 + 0.1 / NUM_CLASSES
    expected = -(smoothed * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(loss, expected)


def test_bad_settings():
    with pytest.raises(ConfigError, match="mixup_alpha"):
        BatchMixer(NUM_CLASSES, mixup_alpha=-0.1)
    with pytest.raises(ConfigError, match="prob"):
        BatchMixer(NUM_CLASSES, mixup_alpha=0.2, prob=1.5)
