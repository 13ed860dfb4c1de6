"""CLIP-SVD: fine-tune only the singular values of the towers' weight matrices (Koleilat et al. 2025).

Each selected weight is factored once, ``W = U diag(s) V^T`` (thin SVD); ``U`` and ``V`` stay
frozen and only ``s`` trains, so a ViT-B/16 adapts with about 0.04 % of its parameters. The
reference is HealthX-Lab/CLIP-SVD @ 022b1eda02df7a5a1311d0868d49874d69b0010e:

- ``svf_utils/svf_torch.py:11-36`` (``d_nsvd``: ``torch.svd``, the top ``rank`` triplets),
  ``:60-77`` (``SVD_Linear``: ``fc_U(fc_V(x) * vector_S)``, bias on ``fc_U``), ``:165-230``
  (``DatafreeSVD``: every ``nn.Linear``, rank = ``round_to_nearest(min(m, n) * rank_ratio, 4)``,
  ratio 1.0: the full thin SVD, so the start is the pretrained model);
- ``train.py:86-95`` (OpenAI CLIP's packed attention split into separate q/k/v/out Linears),
  ``svf_utils/utils.py:24-69`` (only ``vector_S`` trains: q, k, v, out and MLP Linears of the
  blocks in ``include_train_layers`` of both encoders);
- ``train.py:120-167`` (plain CE on ``100 * cos(image, text("<template>"))`` with the text
  re-encoded every step, AdamW, ``CosineAnnealingLR(n_iters * shots, eta_min=1e-6)`` per step),
  ``configs/few_shot/*.yaml`` (lr 5e-4, weight decay 0.01, batch 32, all layers, both towers),
  ``main.py:33`` (``n_iters`` 200).

Here the factorisation is a ``torch.nn.utils.parametrize`` parametrisation of the backbone's own
layers (the forward of HF CLIP, open_clip and BERT runs unchanged). The trained vector is the
layer's ``parametrizations.weight.original``, shaped ``(1, rank)`` as the reference's
``vector_S``: 2-D, so clipft's optimiser applies ``weight_decay`` to it as the reference's AdamW
does. open_clip packs q/k/v into one ``in_proj_weight``; it is factored per third, as the
reference's split layers are. Checkpoints hold ``U``, ``V`` and ``s`` (the SVD is not recomputed
on load: its signs may differ between devices); after the test the pipeline writes
``checkpoints/inference.ckpt``, the product merged back into plain weights, as a
:class:`~clipft.methods.contrastive_finetune.ContrastiveFineTune` (no parametrisation to load).

Not done as the reference: its rank is ``min(m, n)`` rounded down to a multiple of 4, which is the
full rank for every CLIP width (768, 512, 3072, ...) but would truncate other widths, changing the
pretrained model before training; here the rank is always the full ``min(m, n)``. Its ``vector_S`` is float64 (``factory_kwargs``, svf_torch.py:65)
under fp16 autocast; here ``s`` has the weight's dtype and precision is the trainer's. CNN towers
(the dual encoder's MobileNet) have no Linear layers in blocks: they are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from clipft.errors import ConfigError
from clipft.methods.contrastive_finetune import ContrastiveFineTune
from clipft.methods.layer_decay import parameter_depth

log = logging.getLogger(__name__)

TOWERS = ("image", "text")
_OWN_ARGS = ("svd_towers", "svd_layers")


class SingularValues(nn.Module):
    """Parametrisation ``s -> U diag(s) V^T`` of a weight, factored in ``chunks`` row blocks (3 for a packed q/k/v)."""

    def __init__(self, weight: torch.Tensor, chunks: int = 1) -> None:
        super().__init__()
        rows, cols = weight.shape
        if rows % chunks:
            raise ValueError(f"a {rows}-row weight does not split into {chunks} blocks")
        # float64 (the product reproduces the weight to ~1e-7), on the GPU when there is one: a ViT-B's
        # 144 matrices take minutes on a few CPU cores
        device = torch.device("cuda") if torch.cuda.is_available() else weight.device
        blocks = weight.detach().to(device, torch.float64).reshape(chunks, rows // chunks, cols)
        u, s, vh = torch.linalg.svd(blocks, full_matrices=False)  # = torch.svd's thin factors (d_nsvd)
        self.register_buffer("U", u.to(weight.device, weight.dtype))
        self.register_buffer("Vh", vh.to(weight.device, weight.dtype))
        self.initial = s.to(weight.device, weight.dtype)  # not a buffer: only used once, to start ``s`` exactly

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return ((self.U * s.unsqueeze(1)) @ self.Vh).reshape(-1, self.Vh.shape[-1])

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """The ``s`` whose product is closest to ``weight``: ``diag(U^T W V)`` per block."""
        blocks = weight.reshape(self.U.shape[0], self.U.shape[1], -1)
        return torch.einsum("cmr,cmn,crn->cr", self.U, blocks.to(self.U.dtype), self.Vh)


def svd_targets(tower: nn.Module, layers: Sequence[int] | None) -> list[tuple[nn.Module, str, int]]:
    """``(module, weight name, chunks)`` of every Linear (and packed attention input) inside the tower's
    blocks, optionally only blocks ``layers`` (0-based, the reference's ``include_train_layers``)."""
    found = []
    for name, module in tower.named_modules():
        depth = parameter_depth(name + ".")
        if depth is None or depth < 1 or (layers is not None and depth - 1 not in layers):
            continue
        if isinstance(module, nn.Linear):
            found.append((module, "weight", 1))
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found.append((module, "in_proj_weight", 3))  # packed q/k/v: one SVD per projection
    return found


def factor_singular_values(module: nn.Module, name: str, chunks: int) -> nn.Parameter:
    """Reparametrise ``module.<name>`` as ``U diag(s) V^T``; returns the trainable ``s`` (``(chunks, rank)``)."""
    svd = SingularValues(getattr(module, name), chunks)
    parametrize.register_parametrization(module, name, svd, unsafe=True)
    original = module.parametrizations[name].original
    with torch.no_grad():
        original.copy_(svd.initial)  # the SVD's own values, not the projection's rounding
    del svd.initial
    return original.requires_grad_(True)


def merged_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with every parametrised weight multiplied out under its plain key
    (``<layer>.weight``, no ``parametrizations.*``): what the same model without CLIP-SVD loads.

    Computed from the live module, not by removing the parametrisations of a deep copy: the copy shares
    the dynamically created ``Parametrized*`` classes, and removing them there breaks the original."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    for prefix, layer in module.named_modules():
        if not parametrize.is_parametrized(layer):
            continue
        prefix = f"{prefix}." if prefix else ""
        for name in list(layer.parametrizations.keys()):
            for key in [k for k in state if k.startswith(f"{prefix}parametrizations.{name}.")]:
                del state[key]
            with torch.no_grad():
                state[prefix + name] = getattr(layer, name).detach().cpu().clone()
    return state


class CLIPSVD(ContrastiveFineTune):
    """Cross-entropy on the text head, training only the singular values of the towers' block weights.

    Args:
        svd_towers: towers whose block Linears are factored and trained: ``[image, text]`` (the reference),
            ``[image]`` or ``[text]``.
        svd_layers: ``all`` or a list of 0-based block indices (the reference's ``include_train_layers``:
            ``top`` = [8, 9, 10, 11] of a 12-block tower, ``bottom`` = [0, 1, 2, 3], ...).
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod`; the towers' other
        weights, the projections and the temperature stay frozen. The objective is
        :class:`~clipft.methods.contrastive_finetune.ContrastiveFineTune`'s with ``sim_weight 0, cls_weight 1``:
        CE against one prompt per class (``prompts.train_prompt``), re-encoded with gradients every step.
    """

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing")

    def __init__(
        self,
        *args: Any,
        svd_towers: Sequence[str] = TOWERS,
        svd_layers: str | Sequence[int] = "all",
        **kwargs: Any,
    ) -> None:
        towers = [str(t) for t in svd_towers]
        if not towers or any(t not in TOWERS for t in towers):
            raise ConfigError(f"svd_towers={list(svd_towers)} must be a non-empty subset of {list(TOWERS)}")
        layers = _layers(svd_layers)
        # ContrastiveFineTune's objective with cls only: CE with the class text encoded with gradients every step
        # a tower left out is frozen as a whole, eval mode included (a CNN tower's BatchNorm statistics stay)
        super().__init__(*args, sim_weight=0.0, cls_weight=1.0, freeze_logit_scale=True,
                         freeze_image_tower="image" not in towers, freeze_text_tower="text" not in towers, **kwargs)
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        singular_values = []
        for tower in towers:
            module = self.backbone.image_tower if tower == "image" else self.backbone.text_tower
            targets = svd_targets(module, layers)
            if not targets:
                raise ConfigError(
                    f"svd_towers: the {tower} tower of {type(self.backbone).__name__} has no Linear layer in its blocks "
                    f"{'(layers ' + str(layers) + ')' if layers is not None else ''} to factor (a CNN?); "
                    f"leave it out (svd_towers=[{'text' if tower == 'image' else 'image'}]) or use model=clip_bitfit"
                )
            singular_values += [factor_singular_values(m, name, chunks) for m, name, chunks in targets]
        self.trainable_parameters = sum(s.numel() for s in singular_values)
        total = sum(p.numel() for p in self.parameters())
        log.info("CLIP-SVD on %s: %d singular values of %d matrices trainable (%d parameters in all)",
                 "+".join(towers), self.trainable_parameters, len(singular_values), total)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for logger in self.loggers:
            logger.log_hyperparams({"trainable_parameters": self.trainable_parameters})

    def zeroshot_reference(self) -> CLIPSVD:
        """The pretrained model written in this model's ``U`` and ``V`` (``s = diag(U^T W0 V)``), so WiSE-FT
        interpolates the singular values only: a model factored anew (another device, another LAPACK) may
        have other signs in ``U`` and ``V``, and averaging those would not average the weights."""
        reference = super().zeroshot_reference()
        mine = dict(self.named_modules())
        with torch.no_grad():
            for name, layer in reference.named_modules():
                if not parametrize.is_parametrized(layer):
                    continue
                for tensor_name, chain in layer.parametrizations.items():
                    pretrained = getattr(layer, tensor_name).detach().clone()
                    svd, own = chain[0], mine[name].parametrizations[tensor_name][0]
                    svd.U.copy_(own.U)
                    svd.Vh.copy_(own.Vh)
                    chain.original.copy_(svd.right_inverse(pretrained))
        return reference

    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict of the same model with ``U diag(s) V^T`` multiplied out: plain backbone keys."""
        return merged_state(self)

    def inference_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        """The singular values merged into the weights, as a plain ContrastiveFineTune (cross-entropy only)."""
        hparams = {k: v for k, v in dict(self.hparams).items() if k not in _OWN_ARGS}
        hparams.update(sim_weight=0.0, cls_weight=1.0, freeze_logit_scale=True)
        return "clipft.methods.contrastive_finetune.ContrastiveFineTune", hparams, self.merged_state_dict()


def _layers(svd_layers: Any) -> list[int] | None:
    if isinstance(svd_layers, str):
        if svd_layers != "all":
            raise ConfigError(f"svd_layers={svd_layers!r}: give all or a list of block indices, e.g. [8, 9, 10, 11]")
        return None
    layers = list(svd_layers)
    if not layers or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
        raise ConfigError(f"svd_layers={layers!r}: give all or a non-empty list of block indices >= 0")
    return [int(i) for i in layers]
