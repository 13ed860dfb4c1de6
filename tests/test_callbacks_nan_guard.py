"""NanGuard: every step on CPU; on a period, no host sync in between but a NaN is never missed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from clipft.callbacks.nan_guard import NanGuard, NonFiniteLossError


def fake_trainer(step):
    return SimpleNamespace(global_step=step, current_epoch=0, log_every_n_steps=50, checkpoint_callbacks=[])


def test_cpu_default_checks_every_step():
    guard = NanGuard()
    guard.on_before_backward(fake_trainer(0), None, torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match="step 1; stopped before it reached the weights"):
        guard.on_before_backward(fake_trainer(1), None, torch.tensor(float("nan")))


def test_a_period_defers_the_check_but_remembers_a_nan(monkeypatch):
    guard = NanGuard(check_every_n_steps=3)
    reads = []
    real_bool = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: reads.append(1) or real_bool(t))
    guard.on_before_backward(fake_trainer(0), None, torch.tensor(1.0))
    guard.on_before_backward(fake_trainer(1), None, torch.tensor(float("inf")))  # not read yet
    assert reads == [], "no host read between checks"
    with pytest.raises(NonFiniteLossError, match=r"steps 0-2 .* NaN/Inf; checked every 3 steps"):
        guard.on_before_backward(fake_trainer(2), None, torch.tensor(1.0))  # finite itself, but step 1 was not
    assert reads == [1]
    guard.on_before_backward(fake_trainer(5), None, torch.tensor(1.0))  # the flag was reset at the check


def test_accelerator_default_period_is_the_logging_period():
    guard = NanGuard()
    assert guard._period(fake_trainer(0), torch.tensor(1.0)) == 1
    assert guard._period(fake_trainer(0), torch.tensor(1.0, device="meta")) == 50
    with pytest.raises(ValueError, match="check_every_n_steps"):
        NanGuard(check_every_n_steps=0)
