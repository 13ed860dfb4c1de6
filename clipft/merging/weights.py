"""The merging rules on state dicts: task arithmetic, TIES-merging and Model Stock.

Each works on the task vectors ``tau_t = theta_t - theta_0`` of models fine-tuned from one
pretrained ``theta_0``, over the floating tensors only: integer buffers (position ids, counters)
are not weights and come from ``theta_0``, as the task-vector reference skips int64/uint8 keys.
The arithmetic runs in float32 like the references; each result takes its input's dtype.

- Task arithmetic (Ilharco et al., ICLR 2023): ``theta_0 + lambda * sum_t tau_t``;
  mlfoundations/task_vectors @826a64c src/task_vectors.py:20-23 (tau, integer keys skipped),
  :25-34 (sum), :49-59 (``apply_to``: ``theta_0 + scaling_coef * tau``).
- TIES-merging (Yadav et al., NeurIPS 2023): per task keep the ``top_k`` % largest magnitudes of
  its whole flattened vector (entries equal to the threshold kept), elect each parameter's sign
  from the sum of the trimmed vectors (a zero sum takes the majority sign over all parameters),
  average only the entries that agree with it, then ``theta_0 + lambda * that``;
  prateeky2806/ties-merging @44e7891 src/ties_minimal.ipynb lines 207-227 (``topk_values_mask``),
  230-243 (``resolve_zero_signs`` / ``resolve_sign``), 246-274 (``disjoint_merge``, mean),
  277-293 (``ties_merging``), 321-333 (K = 20, ``flat_ptm + lamda * merged_tv``). Tensors that no
  run changed (a frozen tower: its task vectors are all zero) are left out of the flattened vector, whose
  top-k % they would otherwise dilute: the references' vectors hold only the weights that were fine-tuned
  (task_vectors fine-tunes and saves the image encoder alone, src/finetune.py:34,116).
- Model Stock (Jang et al., ECCV 2024): per tensor, the angle between the fine-tuned models' task
  vectors (the mean pairwise angle for N > 2), ``t = N cos / (1 + (N - 1) cos)`` and
  ``theta = t * mean_t theta_t + (1 - t) * theta_0``. The stored snapshot of the official
  naver-ai/model-stock (@e4d75af) holds only its README; the math follows the port of its notebook in
  tanganke/fusion_bench @54c9e8c fusion_bench/method/model_stock/model_stock.py:23-104
  (``compute_angle``, ``compute_ratio``, EPS 1e-8), :108-131 (``merge_weights``), :212-270 (N models).
  A one-element tensor (CLIP's logit scale) has no angle but 0 or 180 degrees, where the ratio blows
  up (cos -1 over 1 - 1 + EPS): it takes the fine-tuned average (t = 1), as that port's CLIP config
  lists ``model.logit_scale`` in ``ignore_keys`` (config/method/model_stock/model_stock.yaml:5-13) and
  ``merge_weights`` keeps the average for ignored keys (model_stock.py:129-131).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from clipft.errors import CheckpointError, ConfigError

EPS = 1e-8  # model_stock.py:23, in the cosine's and the ratio's denominators
StateDict = Mapping[str, torch.Tensor]


def weight_keys(state: StateDict) -> list[str]:
    """The floating tensors of ``state``, in name order (what the merges touch)."""
    return sorted(k for k, v in state.items() if torch.is_floating_point(v))


def task_vectors(pretrained: StateDict, finetuned: Sequence[StateDict]) -> list[dict[str, torch.Tensor]]:
    """``theta_t - theta_0`` of every floating tensor, in float32; refused if a model lacks a tensor or its shape."""
    keys = weight_keys(pretrained)
    out = []
    for i, state in enumerate(finetuned):
        bad = [k for k in keys if k not in state or state[k].shape != pretrained[k].shape]
        if bad:
            raise CheckpointError(
                f"model {i} does not have the pretrained model's weights {bad[:5]}: task vectors need models fine-tuned from it"
            )
        out.append({k: state[k].float() - pretrained[k].float() for k in keys})
    return out


def sum_task_vectors(taus: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Task arithmetic's merged vector: ``sum_t tau_t``, added in order like ``TaskVector.__add__``."""
    out = {k: v.clone() for k, v in taus[0].items()}
    for tau in taus[1:]:
        for k in out:
            out[k] = out[k] + tau[k]
    return out


def apply_task_vector(pretrained: StateDict, tau: StateDict, scale: float) -> dict[str, torch.Tensor]:
    """``theta_0 + scale * tau`` for the tensors ``tau`` has; every other entry of ``pretrained`` unchanged."""
    out = {}
    for k, v in pretrained.items():
        out[k] = (v.float() + scale * tau[k]).to(v.dtype) if k in tau else v.clone()
    return out


def trim_top_k(tau: StateDict, top_k: float) -> dict[str, torch.Tensor]:
    """TIES' trim: keep the ``top_k`` % largest magnitudes of the whole vector (one threshold for all tensors)."""
    flat = torch.cat([v.abs().flatten() for v in tau.values()])
    kth = flat.numel() - int(flat.numel() * (top_k / 100))  # topk_values_mask: k = d - int(d * K)
    if kth == 0:
        return dict(tau)  # top_k = 100: nothing trimmed
    threshold = flat.kthvalue(kth).values
    return {k: v * (v.abs() >= threshold) for k, v in tau.items()}


def ties_task_vector(taus: Sequence[StateDict], top_k: float = 20.0) -> dict[str, torch.Tensor]:
    """TIES-merging's merged vector: trim, elect the sign by summed mass, disjoint mean (scale it with lambda)."""
    if not 0.0 < float(top_k) <= 100.0:
        raise ConfigError(f"--top-k must be a percentage in (0, 100], got {top_k} (the reference uses 20)")
    # tensors no run changed (a frozen tower) are left out of the top-k count: the references' vectors hold
    # only the fine-tuned model's weights (task_vectors fine-tunes the image encoder alone)
    moving = [k for k in taus[0] if any(bool(t[k].any()) for t in taus)]
    out = {k: torch.zeros_like(v) for k, v in taus[0].items() if k not in moving}
    if not moving:
        return out
    trimmed = [trim_top_k({k: tau[k] for k in moving}, float(top_k)) for tau in taus]
    stacked = {k: torch.stack([t[k] for t in trimmed]) for k in moving}
    signs = {k: torch.sign(v.sum(0)) for k, v in stacked.items()}
    majority = torch.sign(torch.stack([s.sum(dtype=torch.float64) for s in signs.values()]).sum())
    for k, v in stacked.items():
        sign = torch.where(signs[k] == 0, majority.to(v.dtype), signs[k])
        selected = v * torch.where(sign > 0, v > 0, v < 0)
        out[k] = selected.sum(0) / (selected != 0).sum(0).float().clamp(min=1)
    return out


def task_vector_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle (radians) between two task vectors of one tensor; 90 degrees when either is zero."""
    a, b = a.double(), b.double()
    cos = float((a * b).sum()) / (math.sqrt(float((a * a).sum()) * float((b * b).sum())) + EPS)
    return math.acos(min(max(cos, -1.0), 1.0))


def model_stock(pretrained: StateDict, finetuned: Sequence[StateDict]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Model Stock: the merged state and each tensor's ratio ``t`` toward the fine-tuned average."""
    n = len(finetuned)
    if n < 2:
        raise ConfigError(f"Model Stock needs at least two fine-tuned models, got {n}: pass two or more runs of one task")
    taus = task_vectors(pretrained, finetuned)
    merged, ratios = {k: v.clone() for k, v in pretrained.items()}, {}
    for key in weight_keys(pretrained):
        if pretrained[key].numel() == 1:
            ratio = 1.0  # no angle between scalars: the plain average, as the reference's ignore_keys
        else:
            angles = [task_vector_angle(taus[i][key], taus[j][key]) for i in range(n) for j in range(i + 1, n)]
            cos = math.cos(sum(angles) / len(angles))
            ratio = n * cos / ((n - 1) * cos + 1 + EPS)
        average = finetuned[0][key].float()
        for state in finetuned[1:]:
            average = average + state[key].float()
        average = average / n
        merged[key] = (average * ratio + pretrained[key].float() * (1.0 - ratio)).to(pretrained[key].dtype)
        ratios[key] = ratio
    return merged, ratios
