"""CLIPZeroShot: classification with no training, from prompts alone; single models or ensembles.

Each member is a CLIP-style backbone with its own zero-shot head (see
:mod:`clipft.methods.zeroshot_head`), computed once. An ensemble averages the members'
**probabilities** with weights; ``prob_floor`` zeroes each member's probabilities below the
floor before averaging (the competition recipe: a member's near-zero votes are noise, not
evidence), then renormalises. ``forward`` returns log-probabilities, so ``softmax(forward(x))``
is the ensemble's distribution and every metric of :class:`ClassificationModule` applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.classification import ClassificationModule
from clipft.methods.zeroshot_head import zeroshot_weights
from clipft.prompts import prompt_set_from_config
from clipft.utils.instantiate import instantiate

MAX_LOGIT_SCALE = 100.0
NO_OPTIMIZER = {"_target_": "torch.optim.SGD", "lr": 1.0e-3}


class CLIPZeroShot(ClassificationModule):
    """Zero-shot classifier over one backbone (``clip``) or a weighted ensemble (``ensemble``).

    Args:
        clip: one backbone config; ignored when ``ensemble`` is given.
        ensemble: ``[{clip: {...}, weight: 1.0, prompts: {...} (optional)}, ...]``.
        prompts: the default prompt block of every member.
        prob_floor: member probabilities below this are zeroed before averaging (0 = off).
        optimizer, scheduler: unused (nothing trains).
        Every other argument: :class:`~clipft.methods.classification.ClassificationModule`.
    """

    passes_on = ("class_names",)

    def __init__(
        self,
        *args: Any,
        clip: dict[str, Any] | None = None,
        ensemble: Sequence[dict[str, Any]] | None = None,
        prompts: dict[str, Any] | None = None,
        prob_floor: float = 0.0,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, optimizer=optimizer or dict(NO_OPTIMIZER), scheduler=None, **kwargs)
        members = list(ensemble or ([{"clip": clip}] if clip else []))
        if not members:
            raise ConfigError("CLIPZeroShot needs clip (one backbone config) or ensemble (a list of {clip: ...})")
        if not 0.0 <= float(prob_floor) < 1.0:
            raise ConfigError(f"prob_floor must be in [0, 1), got {prob_floor}")
        for i, m in enumerate(members):
            if not isinstance(m, dict) or "clip" not in m:
                raise ConfigError(f"ensemble[{i}] must be a mapping with a 'clip' backbone config, got {m!r}")
        weights = torch.tensor([float(m.get("weight", 1.0)) for m in members])
        if (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(f"ensemble weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.member_weights = (weights / weights.sum()).tolist()
        self.prob_floor = float(prob_floor)
        self.backbones = nn.ModuleList([instantiate(m["clip"], config_path=f"ensemble[{i}].clip" if ensemble else "clip") for i, m in enumerate(members)])
        self.backbones.requires_grad_(False)
        self.member_prompts = [dict(m.get("prompts") or prompts or {}) for m in members]
        self.prompt_sets = [prompt_set_from_config(self.class_names, p) for p in self.member_prompts]
        self._heads: list[torch.Tensor] | None = None

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.backbones[0].preprocessing)

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        """Use one prompt block (e.g. another template set) for every member."""
        self.member_prompts = [dict(prompts) for _ in self.backbones]
        self.prompt_sets = [prompt_set_from_config(self.class_names, prompts) for _ in self.backbones]
        self._heads = None

    def heads(self) -> list[torch.Tensor]:
        if self._heads is None:
            self._heads = [
                zeroshot_weights(bb, ps.per_class, self.device) for bb, ps in zip(self.backbones, self.prompt_sets)
            ]
        return self._heads

    def prepare_for_inference(self) -> None:
        self._heads = None
        self.heads()

    def member_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``(members, batch, classes)`` softmax probabilities."""
        base = self.preprocessing
        probs = []
        for backbone, head in zip(self.backbones, self.heads()):
            x = _adapt_pixels(images, base, backbone.preprocessing)
            image = backbone.encode_image(x).float()
            scale = backbone.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE).float()
            probs.append((scale * image @ head.t()).softmax(dim=-1))
        return torch.stack(probs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = self.member_probabilities(images)
        if self.prob_floor > 0:
            probs = torch.where(probs >= self.prob_floor, probs, torch.zeros_like(probs))
        weights = torch.tensor(self.member_weights, device=probs.device).view(-1, 1, 1)
        mixed = (weights * probs).sum(0)
        mixed = mixed / mixed.sum(-1, keepdim=True).clamp(min=1e-12)
        return mixed.clamp(min=1e-12).log()

    def configure_optimizers(self) -> Any:
        return None  # nothing trains: fit is one validation epoch (so zero-shot rows sit in train.py sweeps)

    def on_fit_start(self) -> None:
        self.trainer.should_stop = True

    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._heads = None  # recomputed once for this epoch (prompts may have changed)


def _adapt_pixels(images: torch.Tensor, have: dict[str, Any], want: dict[str, Any]) -> torch.Tensor:
    """Re-normalise/resize a batch prepared for one member's preprocessing to another's."""
    if have == want:
        return images
    mean_h = torch.tensor(have["mean"], device=images.device).view(1, -1, 1, 1)
    std_h = torch.tensor(have["std"], device=images.device).view(1, -1, 1, 1)
    raw = images * std_h + mean_h
    size = int(want["image_size"])
    if raw.shape[-1] != size or raw.shape[-2] != size:
        raw = nn.functional.interpolate(raw, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean_w = torch.tensor(want["mean"], device=images.device).view(1, -1, 1, 1)
    std_w = torch.tensor(want["std"], device=images.device).view(1, -1, 1, 1)
    return (raw - mean_w) / std_w
