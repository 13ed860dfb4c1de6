"""One image-tower pass for an evaluation's sweeps (template sets, WiSE-FT points that leave the tower alone).

``eval.py zeroshot.template_sets=[...]`` and ``wise_ft.alphas=[...]`` score the same test images once per sweep
point. Between template sets only the text head changes, so every pass after the first would recompute the
same image embeddings. :class:`FeaturePass` wraps the ``encode_image`` of each backbone of a model and
remembers its outputs, keyed by the backbone's weights and the exact bytes of the input batch: a later pass
over the same (unshuffled, deterministically transformed) loader reads them back, bit for bit; a backbone
whose weights changed (a WiSE-FT point that moves the image tower) misses and recomputes. Key = weights
version x sha256 of the pixels, so a reuse is never a guess.

Written here, not taken from a library: Lightning, torchmetrics and open_clip have no cache of a model's
intermediate outputs across evaluation passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from clipft.callbacks.feature_bank import weights_hash


def outer_backbones(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that have an ``encode_image`` (a backbone), outermost only."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if module is model or not callable(getattr(module, "encode_image", None)):
            continue
        if any(name.startswith(parent + ".") for parent, _ in found):
            continue
        found.append((name, module))
    return [module for _, module in found]


def batch_digest(images: torch.Tensor) -> str:
    """sha256 of a batch's dtype, shape and bytes: equal only for the identical input."""
    flat = images.detach().contiguous().cpu().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{tuple(images.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeaturePass:
    """Context manager: within it, each backbone's ``encode_image`` computes an input once per weights version.

    Call :meth:`weights_changed` after loading other weights into the model (a WiSE-FT point): the backbones
    are re-fingerprinted, and those whose weights did change recompute on the next pass.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.backbones = outer_backbones(model)
        self.versions: dict[int, str] = {}
        self.outputs: dict[tuple[int, str, str, str], torch.Tensor] = {}
        self.computed = 0  # encode_image calls that ran the tower
        self.reused = 0  # calls answered from a previous pass

    def __enter__(self) -> FeaturePass:
        self.weights_changed()
        for backbone in self.backbones:
            backbone.encode_image = self._remembering(backbone, backbone.encode_image)
        return self

    def __exit__(self, *exc: Any) -> None:
        for backbone in self.backbones:
            if "encode_image" in vars(backbone):
                del backbone.encode_image  # the class's method again
        self.outputs.clear()

    def weights_changed(self) -> None:
        self.versions = {id(b): weights_hash(b) for b in self.backbones}

    def _remembering(self, backbone: nn.Module, encode: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def encode_image(images: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if torch.is_grad_enabled() or backbone.training:  # only inference passes are remembered
                return encode(images, *args, **kwargs)
            key = (id(backbone), self.versions[id(backbone)], batch_digest(images), repr((args, sorted(kwargs.items()))))
            if key not in self.outputs:
                self.outputs[key] = encode(images, *args, **kwargs)
                self.computed += 1
            else:
                self.reused += 1
            return self.outputs[key]

        return encode_image
