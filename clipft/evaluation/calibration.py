"""Temperature scaling (Guo et al., 2017): one scalar T fitted on validation, reported as ECE before/after.

Works from probabilities alone: ``log p`` equals the logits up to a per-sample constant, which
softmax ignores, so ``softmax(log p / T)`` is exactly the temperature-scaled prediction.
"""

from __future__ import annotations

from typing import Any

import torch

from clipft.errors import DataError
from clipft.evaluation.metrics import PROB_FLOOR, expected_calibration_error, negative_log_likelihood

T_MIN, T_MAX = 0.05, 20.0


def _log_probs(probs: torch.Tensor) -> torch.Tensor:
    return probs.double().clamp_min(PROB_FLOOR).log()


def apply_temperature(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Rescale predicted probabilities by temperature ``T`` (T > 1 softens, T < 1 sharpens)."""
    return torch.softmax(_log_probs(probs) / float(temperature), dim=-1).to(probs.dtype)


def fit_temperature(probs: torch.Tensor, targets: torch.Tensor, max_iter: int = 200) -> float:
    """The T that minimises validation NLL (LBFGS on log T, so T stays positive)."""
    if len(targets) == 0:
        raise DataError("temperature scaling needs a non-empty validation split (set data.val_fraction > 0)")
    logits, targets = _log_probs(probs), targets.long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(T_MIN, T_MAX))


def calibration_report(
    val_probs: torch.Tensor, val_targets: torch.Tensor, test_probs: torch.Tensor, test_targets: torch.Tensor
) -> dict[str, Any]:
    """Fit T on val; ECE and NLL before/after on val and test."""
    temperature = fit_temperature(val_probs, val_targets)
    report: dict[str, Any] = {"temperature": temperature}
    for split, probs, targets in (("val", val_probs, val_targets), ("test", test_probs, test_targets)):
        scaled = apply_temperature(probs, temperature)
        report[split] = {
            "ece_before": expected_calibration_error(probs, targets),
            "ece_after": expected_calibration_error(scaled, targets),
            "nll_before": negative_log_likelihood(probs, targets),
            "nll_after": negative_log_likelihood(scaled, targets),
        }
    return report
