"""One image-tower pass for evaluation sweeps (clipft.evaluation.feature_pass)."""

from __future__ import annotations

import torch
from torch import nn

from clipft.evaluation.feature_pass import FeaturePass, outer_backbones


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 4)
        self.calls = 0

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        self.calls += 1
        out = self.proj(images.flatten(1))
        return nn.functional.normalize(out, dim=-1) if normalize else out


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = Tower()
        self.head = nn.Linear(4, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.encode_image(images))


def passes(model: Model, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(b) for b in batches]


def test_a_second_pass_reads_the_first_passes_embeddings_bit_for_bit():
    torch.manual_seed(0)
    model, batches = Model().eval(), [torch.randn(5, 3, 2, 2) for _ in range(3)]
    plain = passes(model, batches)
    model.backbone.calls = 0
    with FeaturePass(model) as cache:
        first = passes(model, batches)
        model.head.weight.data.mul_(2)  # the head changes between sweep points; the tower does not
        passes(model, batches)
    assert model.backbone.calls == 3 and (cache.computed, cache.reused) == (3, 3)
    assert all(torch.equal(a, b) for a, b in zip(plain, first))
    model.head.weight.data.div_(2)
    assert all(torch.equal(a, b) for a, b in zip(plain, passes(model, batches)))
    assert "encode_image" not in vars(model.backbone)  # the class's method again after the block


def test_changed_tower_weights_or_inputs_recompute_and_training_passes_are_not_remembered():
    torch.manual_seed(0)
    model, batch = Model().eval(), torch.randn(4, 3, 2, 2)
    with FeaturePass(model) as cache:
        before = passes(model, [batch])[0]
        model.backbone.proj.weight.data.add_(0.5)
        cache.weights_changed()
        moved = passes(model, [batch])[0]
        assert not torch.equal(before, moved) and cache.computed == 2
        cache.weights_changed()  # weights unchanged since: reused
        passes(model, [batch])
        assert cache.reused == 1
        passes(model, [batch + 1e-6])  # a different input is a different key
        assert cache.computed == 3
        model.train()
        model(batch).sum().backward()  # gradients flow: computed, never stored
        assert cache.computed == 3 and model.backbone.proj.weight.grad is not None


def test_only_the_outermost_backbones_are_wrapped():
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Tower()

        def encode_image(self, images, normalize=True):
            return self.inner.encode_image(images, normalize)

    holder = nn.Module()
    holder.members = nn.ModuleList([Outer(), Tower()])
    assert [type(b).__name__ for b in outer_backbones(holder)] == ["Outer", "Tower"]
