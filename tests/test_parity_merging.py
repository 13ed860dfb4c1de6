"""Parity of clipft.merging.weights with the merging references, on identical state dicts (to 1e-6).

Each reference's math is transcribed below in plain torch (read, not copied):

- Task arithmetic: mlfoundations/task_vectors @826a64c67082fab0f40628233287948f0f8d7fa3 src/task_vectors.py:20-23
  (tau = finetuned - pretrained, int64/uint8 keys skipped), :25-34 (sum, in order), :49-59 (apply_to:
  pretrained + scaling_coef * tau).
- TIES-merging: prateeky2806/ties-merging @44e7891fc84f3de7e4caa52664cd864ca3715e91 src/ties_minimal.ipynb
  lines 34-42 (state_dict_to_vector: keys sorted, flattened, concatenated), 207-227 (topk_values_mask:
  k = d - int(d * K), kthvalue per task row, keep |x| >= it), 230-243 (sign of the summed rows, zeros
  to the sign of the signs' sum), 246-274 (disjoint mean), 333 (flat_ptm + lamda * merged_tv).
- Model Stock: naver-ai/model-stock @e4d75af holds only its README in the stored snapshot; its notebook's
  math as ported in tanganke/fusion_bench @54c9e8c9d9621620c720452cd8533332a32d3689
  fusion_bench/method/model_stock/model_stock.py:67-85 (cosine of the task vectors with EPS, clamp, angle
  in degrees), :90-104 (ratio k cos / ((k - 1) cos + 1 + EPS)), :108-131 (two models: w12 * r + w0 * (1 - r)),
  :212-239 and :255-270 (N models: mean pairwise angle, k = N, mean of the fine-tuned weights); one-element
  tensors are ``ignore_keys`` (its CLIP config config/method/model_stock/model_stock.yaml:5-13 lists
  model.logit_scale), which keep the plain average (model_stock.py:129-131, :266-270).
"""

from __future__ import annotations

import math

import pytest
import torch

from clipft.merging.weights import apply_task_vector, model_stock, sum_task_vectors, task_vectors, ties_task_vector

EPS = 1e-8
SHAPES = {"a.weight": (6, 5), "a.bias": (6,), "b.weight": (3, 2, 2), "scale": ()}


def states(n: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A pretrained state (with an integer buffer) and ``n`` fine-tuned ones near it."""
    g = torch.Generator().manual_seed(seed)
    pre = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    pre["pos"] = torch.arange(4)
    fts = [{k: (v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in pre.items()}
           for _ in range(n)]
    return pre, fts


def assert_states_close(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    for key, value in ref.items():
        torch.testing.assert_close(ours[key], value, atol=1e-6, rtol=0, msg=key)


# ---------------------------------------------------------------- reference transcriptions
def ref_task_arithmetic(pre, fts, coef):
    vectors = [{k: ft[k] - pre[k] for k in pre if pre[k].dtype not in (torch.int64, torch.uint8)} for ft in fts]
    total = vectors[0]
    for vec in vectors[1:]:
        total = {k: total[k] + vec[k] for k in total}
    return {k: pre[k] + coef * total[k] for k in pre if k in total}


def ref_ties(pre, fts, K, lam):
    keys = sorted(k for k in pre if pre[k].is_floating_point())  # integer buffers are not part of the vector
    flat = lambda sd: torch.cat([sd[k].reshape(-1) for k in keys])
    flat_pt = flat(pre)
    tv = torch.vstack([flat(ft) for ft in fts]) - flat_pt
    d = tv.shape[1]
    kth = d - int(d * (K / 100))
    threshold = tv.abs().kthvalue(kth, dim=1, keepdim=True).values
    trimmed = tv * (tv.abs() >= threshold)
    sign = torch.sign(trimmed.sum(dim=0))
    sign[sign == 0] = torch.sign(sign.sum())
    chosen = trimmed * torch.where(sign.unsqueeze(0) > 0, trimmed > 0, trimmed < 0)
    merged = chosen.sum(dim=0) / torch.clamp((chosen != 0).sum(dim=0).float(), min=1)
    out, offset = {}, 0
    result = flat_pt + lam * merged
    for k in keys:
        out[k] = result[offset:offset + pre[k].numel()].view_as(pre[k])
        offset += pre[k].numel()
    return out


def ref_model_stock(pre, fts):
    keys = [k for k in pre if pre[k].is_floating_point()]
    n = len(fts)
    ignore_keys = [k for k in keys if pre[k].numel() == 1]
    ratios, out = {}, {}
    for key in keys:
        if n == 2:
            average = (fts[0][key].clone() + fts[1][key].clone()) / 2.0
        else:
            average = torch.zeros_like(fts[0][key])
            for ft in fts:
                average += ft[key]
            average /= n
        if key in ignore_keys:
            out[key] = average
            continue
        degrees = []
        for i in range(n):
            for j in range(i + 1, n):
                v1, v2 = (fts[i][key] - pre[key]).float(), (fts[j][key] - pre[key]).float()
                cos = torch.sum(v1 * v2) / (math.sqrt(torch.sum(v1 ** 2) * torch.sum(v2 ** 2)) + EPS)
                degrees.append(math.degrees(torch.acos(torch.clamp(cos, -1.0, 1.0)).item()))
        angle = math.radians(sum(degrees) / len(degrees))
        ratios[key] = n * math.cos(angle) / ((n - 1) * math.cos(angle) + 1 + EPS)
        out[key] = average * ratios[key] + pre[key] * (1.0 - ratios[key])
    return out, ratios


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("coef", [0.0, 0.3, 1.0])
def test_task_arithmetic_matches_task_vectors_reference(n, coef):
    pre, fts = states(n)
    ours = apply_task_vector(pre, sum_task_vectors(task_vectors(pre, fts)), coef)
    assert_states_close(ours, ref_task_arithmetic(pre, fts, coef))
    assert torch.equal(ours["pos"], pre["pos"])


@pytest.mark.parametrize(("n", "K", "lam"), [(2, 20, 1.0), (3, 20, 0.4), (4, 50, 0.7), (3, 3, 1.0)])
def test_ties_matches_ties_merging_reference(n, K, lam):
    pre, fts = states(n, seed=n)
    ours = apply_task_vector(pre, ties_task_vector(task_vectors(pre, fts), K), lam)
    assert_states_close(ours, ref_ties(pre, fts, K, lam))
    assert torch.equal(ours["pos"], pre["pos"])


def test_ties_matches_the_reference_on_sign_ties_and_threshold_ties():
    """Dyadic values so that two kept entries cancel exactly (the majority-sign rule) and magnitudes tie at the threshold."""
    pre = {k: torch.zeros(s) for k, s in SHAPES.items()}
    fts = []
    for sign in (1.0, -1.0):
        ft = {k: torch.full(s, 0.25) for k, s in SHAPES.items()}
        ft["a.weight"][0] = 4.0 * sign  # cancels between the two tasks: sum 0, sign from the majority
        ft["b.weight"][0, 0, 0] = 2.0
        fts.append(ft)
    ours = apply_task_vector(pre, ties_task_vector(task_vectors(pre, fts), 20), 1.0)
    ref = ref_ties(pre, fts, 20, 1.0)
    assert_states_close(ours, ref)
    assert torch.equal(ours["a.weight"][0], torch.full((5,), 4.0))  # the majority of elected signs is positive


def test_ties_leaves_a_tensor_no_run_changed_out_of_the_top_k_like_a_reference_model_without_it():
    """A frozen tower (zero task vector in every run) is not part of the reference's model: it fine-tunes and
    saves the image encoder alone (task_vectors src/finetune.py:34,116), so it does not count in the top-k %."""
    pre, fts = states(3, seed=7)
    for ft in fts:
        ft["a.weight"] = pre["a.weight"].clone()
    ours = apply_task_vector(pre, ties_task_vector(task_vectors(pre, fts), 20), 0.6)
    without = lambda sd: {k: v for k, v in sd.items() if k != "a.weight"}
    assert_states_close(ours, ref_ties(without(pre), [without(ft) for ft in fts], 20, 0.6))
    assert torch.equal(ours["a.weight"], pre["a.weight"])


@pytest.mark.parametrize("n", [2, 3])
def test_model_stock_matches_the_reference(n):
    pre, fts = states(n, seed=10 + n)
    fts[0]["a.bias"] = pre["a.bias"].clone()  # a tensor one model did not change: cos 0 (ratio 0 for two models)
    ours, ratios = model_stock(pre, fts)
    ref, ref_ratios = ref_model_stock(pre, fts)
    assert_states_close(ours, ref)
    assert all(abs(ratios[k] - ref_ratios[k]) < 1e-6 for k in ref_ratios)
    assert (abs(ratios["a.bias"]) < 1e-6) == (n == 2) and torch.equal(ours["pos"], pre["pos"])
    assert ratios["scale"] == 1.0  # the one-element tensor (a logit scale) is the plain average, as in the reference
