"""Metric values against hand-computed ones; temperature scaling; history parsing; errors.csv."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch

from clipft.errors import DataError
from clipft.evaluation.artefacts import errors_table
from clipft.evaluation.calibration import apply_temperature, calibration_report, fit_temperature
from clipft.evaluation.gradcam import select_examples
from clipft.evaluation.history import read_epoch_history
from clipft.evaluation.metrics import classification_report

CLASSES = ["stop", "yield", "parking"]
# 6 samples; predictions (argmax) = [0, 0, 1, 1, 2, 0], targets = [0, 1, 1, 1, 2, 2]
PROBS = torch.tensor(
    [
        [0.90, 0.05, 0.05],  # true 0, pred 0, conf .90  correct
        [0.60, 0.30, 0.10],  # true 1, pred 0, conf .60  wrong
        [0.20, 0.70, 0.10],  # true 1, pred 1, conf .70  correct
        [0.10, 0.80, 0.10],  # true 1, pred 1, conf .80  correct
        [0.05, 0.05, 0.90],  # true 2, pred 2, conf .90  correct
        [0.50, 0.10, 0.40],  # true 2, pred 0, conf .50  wrong
    ]
)
TARGETS = torch.tensor([0, 1, 1, 1, 2, 2])


def test_report_matches_hand_computed_values():
    r = classification_report(PROBS, TARGETS, CLASSES)
    assert r["num_samples"] == 6
    assert r["accuracy"] == pytest.approx(4 / 6)
    # top-5 of 3 classes is top-3: always right; the k it was computed with is recorded beside it
    assert r["top5_accuracy"] == pytest.approx(1.0) and r["top5_k"] == 3
    # per class: stop P=1/3 R=1 ; yield P=1 R=2/3 ; parking P=1 R=1/2
    f1 = [2 * (1 / 3) * 1 / (1 / 3 + 1), 2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * 1 * 0.5 / 1.5]
    assert r["macro_f1"] == pytest.approx(sum(f1) / 3, abs=1e-6)
    assert r["per_class"]["stop"] == pytest.approx(
        {"accuracy": 1.0, "precision": 1 / 3, "recall": 1.0, "f1": f1[0], "support": 1}, abs=1e-6
    )
    assert r["per_class"]["yield"]["precision"] == pytest.approx(1.0)
    assert r["per_class"]["yield"]["accuracy"] == pytest.approx(2 / 3)
    assert r["per_class"]["parking"]["recall"] == pytest.approx(0.5)
    assert r["confusion_matrix"] == [[1, 0, 0], [1, 2, 0], [1, 0, 1]]
    # 15 equal-width bins: every confidence falls in its own bin, each holding one sample,
    # so ECE = mean |conf - correct|; the two 0.90s share a bin where both are right.
    conf = [0.90, 0.60, 0.70, 0.80, 0.90, 0.50]
    correct = [1, 0, 1, 1, 1, 0]
    ece = sum(abs(c - k) for c, k in zip(conf, correct)) / 6
    assert r["ece"] == pytest.approx(ece, abs=1e-6)
    nll = -sum(math.log(PROBS[i, TARGETS[i]]) for i in range(6)) / 6
    assert r["nll"] == pytest.approx(nll, abs=1e-6)


def test_top5_on_many_classes():
    probs = torch.eye(8)[[1, 2]] * 0.3 + torch.full((2, 8), 0.7 / 8)  # predicted 1 and 2
    targets = torch.tensor([1, 7])
    probs[1, 7] = probs[1].max() - 0.01  # class 7 ranked 2nd for sample 2
    r = classification_report(probs, targets, [f"c{i}" for i in range(8)])
    assert r["accuracy"] == pytest.approx(0.5)
    assert r["top5_accuracy"] == pytest.approx(1.0) and r["top5_k"] == 5


def test_top5_key_is_stable_on_a_two_class_set():
    """A metric written for ``top5_accuracy`` raised KeyError when the report named it ``top2_accuracy``."""
    from clipft.evaluation.headline import HeadlineMetric, headline_summary, register_headline_metric, table_columns

    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    r = classification_report(probs, torch.tensor([0, 1, 1]), ["go", "stop"])
    assert r["top5_accuracy"] == pytest.approx(1.0) and r["top5_k"] == 2
    assert not any(k.startswith("top") and k not in ("top5_accuracy", "top5_k") for k in r)
    summary = headline_summary(r, "test")
    assert summary["test_top5_accuracy"] == pytest.approx(1.0) and summary["test_top5_k"] == 2
    assert "test_top5_acc" not in table_columns("test")  # summary only: the results table is unchanged
    from clipft.evaluation import headline

    saved = list(headline.HEADLINE_METRICS)
    try:
        register_headline_metric(HeadlineMetric("top5_error", lambda rep: 1 - rep["top5_accuracy"], "top5_err", "top-5 err"))
        assert headline_summary(r, "val")["val_top5_error"] == pytest.approx(0.0)
    finally:
        headline.HEADLINE_METRICS[:] = saved


def test_temperature_recovers_known_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=g) * 2
    targets = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    overconfident = (logits * 3).softmax(-1)  # a model 3x too sharp: T should come out near 3
    t = fit_temperature(overconfident, targets)
    assert t == pytest.approx(3.0, rel=0.1)
    report = calibration_report(overconfident, targets, overconfident, targets)
    assert report["test"]["ece_after"] < 0.5 * report["test"]["ece_before"]
    assert report["val"]["nll_after"] < report["val"]["nll_before"]


def test_apply_temperature_identity_and_softening():
    assert torch.allclose(apply_temperature(PROBS, 1.0), PROBS, atol=1e-6)
    softer = apply_temperature(PROBS, 2.0)
    assert torch.allclose(softer.sum(-1), torch.ones(6), atol=1e-6)
    assert (softer.max(-1).values < PROBS.max(-1).values).all()
    assert torch.equal(softer.argmax(-1), PROBS.argmax(-1))


def test_fit_temperature_needs_validation_samples():
    with pytest.raises(DataError, match="val_fraction"):
        fit_temperature(torch.empty(0, 3), torch.empty(0, dtype=torch.long))


def test_errors_table_lists_misclassified_most_confident_first():
    paths = [f"img{i}.png" for i in range(6)]
    rows = list(csv.DictReader(io.StringIO(errors_table(paths, PROBS, TARGETS, CLASSES))))
    assert [r["path"] for r in rows] == ["img1.png", "img5.png"]
    assert rows[0] == {"path": "img1.png", "true": "yield", "pred": "stop", "prob_pred": "0.600000", "prob_true": "0.300000"}


def test_select_examples_errors_then_correct():
    assert select_examples(PROBS, TARGETS, 4) == [1, 5, 0, 4]
    assert select_examples(PROBS, TARGETS, 1) == [0]  # half of 1 is 0 errors: the most confident correct one
    assert len(select_examples(PROBS, TARGETS, 100)) == 6
    doubled = torch.cat([PROBS, PROBS])  # pixel copies predict identically: each is shown once
    assert select_examples(doubled, torch.cat([TARGETS, TARGETS]), 4) == [1, 5, 0, 4]


def test_history_folds_sparse_csv_rows(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text(
        "epoch,step,train/loss_step,train/loss_epoch,val/acc,val/loss,test/acc,lr-AdamW\n"
        ",9,,,,,,0.001\n"
        "0,9,2.0,,,,,\n"
        "0,9,,,0.5,1.2,,\n"
        "0,9,,1.8,,,,\n"
        "1,19,,,0.75,0.9,,\n"
        "1,19,,1.1,,,,\n"
        "1,19,,,,,0.7,\n"
    )
    assert read_epoch_history(f) == [
        {"epoch": 0, "val/acc": 0.5, "val/loss": 1.2, "train/loss": 1.8},
        {"epoch": 1, "val/acc": 0.75, "val/loss": 0.9, "train/loss": 1.1},
    ]
    assert read_epoch_history(tmp_path / "missing.csv") == []


def test_class_without_test_images_has_no_accuracy_not_zero(tmp_path):
    from PIL import Image

    from clipft.evaluation.plots import plot_per_class_accuracy

    names = [*CLASSES, "no entry"]  # never a target, never predicted
    probs = torch.cat([PROBS, torch.zeros(6, 1)], dim=1)
    r = classification_report(probs, TARGETS, names)
    assert r["per_class"]["no entry"] == {"accuracy": None, "precision": None, "recall": None, "f1": 0.0, "support": 0}
    # macro-F1 leaves out a class that is neither present nor predicted
    assert r["macro_f1"] == pytest.approx(classification_report(PROBS, TARGETS, CLASSES)["macro_f1"])
    with Image.open(plot_per_class_accuracy(r["per_class"], tmp_path / "pc.png")) as im:
        im.verify()
