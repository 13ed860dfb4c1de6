"""WiSE-FT: weight-space ensembles of a zero-shot and a fine-tuned model (Wortsman et al. 2022).

``theta(alpha) = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned`` for every floating
tensor of the state dict (integer buffers are taken from the fine-tuned model). alpha = 0 is
the zero-shot model and alpha = 1 the fine-tuned model, bit for bit. The zero-shot model is the
fine-tuned module's :meth:`zeroshot_reference` (same config, pretrained backbone, initial head),
so it needs a backbone whose pretrained weights are reproducible from its config (hub id,
local folder, or a dual encoder, whose projections are seeded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from clipft.errors import CheckpointError, ConfigError


def interpolate_state_dicts(
    zeroshot: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    if set(zeroshot) != set(finetuned):
        only_zs = sorted(set(zeroshot) - set(finetuned))[:5]
        only_ft = sorted(set(finetuned) - set(zeroshot))[:5]
        raise CheckpointError(f"WiSE-FT: the models' weights differ in keys (zero-shot only {only_zs}, fine-tuned only {only_ft})")
    out = {}
    for key, ft in finetuned.items():
        zs = zeroshot[key]
        if not torch.is_floating_point(ft) or alpha == 1.0:
            out[key] = ft.clone()
        elif alpha == 0.0:
            out[key] = zs.clone().to(ft.dtype)
        else:
            out[key] = ((1.0 - alpha) * zs.to(ft.dtype) + alpha * ft).to(ft.dtype)
    return out


def check_alphas(alphas: Sequence[float]) -> list[float]:
    values = [float(a) for a in alphas]
    bad = [a for a in values if not 0.0 <= a <= 1.0]
    if bad or not values:
        raise ConfigError(f"wise_ft.alphas must be a non-empty list of numbers in [0, 1], got {list(alphas)}")
    return values


def wise_ft_sweep(finetuned: nn.Module, alphas: Sequence[float]) -> Iterator[tuple[float, nn.Module]]:
    """Yield ``(alpha, model)`` with ``finetuned``'s weights replaced by the interpolation, in place.

    The fine-tuned weights are restored when the sweep ends.
    """
    from clipft.methods.clip_method import CLIPMethod

    alphas = check_alphas(alphas)
    if not isinstance(finetuned, CLIPMethod):
        raise CheckpointError(
            f"WiSE-FT needs a CLIP fine-tuning checkpoint (model=clip_flyp / clip_linear_head / clip_lpft / clip_frozen_head); "
            f"{type(finetuned).__name__} has no zero-shot reference"
        )
    ft_state = {k: v.detach().clone() for k, v in finetuned.state_dict().items()}
    zs_state = {k: v.detach().to(ft_state[k].device) for k, v in finetuned.zeroshot_reference().state_dict().items()}
    try:
        for alpha in alphas:
            finetuned.load_state_dict(interpolate_state_dicts(zs_state, ft_state, alpha))
            yield alpha, finetuned
    finally:
        finetuned.load_state_dict(ft_state)
