"""Quiet logs: every Lightning line once (and in train.log), no vendor tips, no library-internal
deprecation chatter; the loss curves put comparable losses on one axis."""

from __future__ import annotations

import logging
from collections import Counter

from conftest import FAST, run_script

from clipft.evaluation.plots import training_curve_panels
from clipft.utils.quiet_logs import quiet_library_logs


def test_a_training_run_prints_each_line_once_without_tips(tmp_path):
    result = run_script("train.py", [*FAST, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [ln.split("] - ", 1)[-1].strip() for ln in (result.stdout + result.stderr).splitlines()]
    messages = [ln for ln in lines if ln and not set(ln) <= set("━─│┃┏┓┗┛└┘┌┐├┤┡┩┢┪╇╈ ") and (ln[0].isalpha() or ln[0] == "`")]
    repeated = {m: n for m, n in Counter(messages).items() if n > 1}
    assert not repeated, f"printed more than once: {repeated}"
    assert "`Trainer.fit` stopped: `max_epochs=1` reached." in messages
    assert not any("💡" in ln or "litlogger" in ln for ln in lines)
    assert not any("LeafSpec" in ln for ln in lines)
    log_file = (tmp_path / "run" / "train.log").read_text()
    assert "`Trainer.fit` stopped" in log_file and "Seed set to" in log_file  # Lightning's lines reach train.log


def test_quiet_library_logs_routes_lightning_through_the_root_once():
    import lightning.pytorch  # noqa: F401 - installs Lightning's own stderr handlers

    lightning = logging.getLogger("lightning.pytorch")
    saved = (list(lightning.handlers), lightning.propagate)
    root = logging.getLogger()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    root.addHandler(handler)
    try:
        quiet_library_logs()
        quiet_library_logs()  # idempotent
        assert lightning.propagate and not [h for h in lightning.handlers if type(h) is logging.StreamHandler]
        tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        tips.warning("💡 Tip: install our cloud product")
        tips.warning("GPU available: False")
        assert [r.getMessage() for r in records] == ["GPU available: False"]
    finally:
        root.removeHandler(handler)
        lightning.handlers[:], lightning.propagate = saved


def test_loss_panels_put_cross_entropy_together_and_the_combined_loss_apart():
    combined = [{"epoch": 0, "train/loss": 6.3, "train/loss_cls": 2.3, "train/loss_sim": 4.0, "val/loss": 2.2, "val/acc": 0.1}]
    assert training_curve_panels(combined) == [
        (["train/loss_cls", "val/loss"], "cross-entropy (train vs val)"),
        (["train/loss", "train/loss_sim"], "training objective (combined loss)"),
        (["val/acc"], "validation metrics"),
    ]
    plain = [{"epoch": 0, "train/loss": 2.3, "val/loss": 2.2, "val/acc": 0.1}]
    assert training_curve_panels(plain) == [(["train/loss", "val/loss"], "cross-entropy (train vs val)"),
                                            (["val/acc"], "validation metrics")]
