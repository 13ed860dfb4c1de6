"""docs/extending.md holds: one example of each kind (tests/extending/) works end to end with
exactly the number of files the guide promises, and nothing inside clipft/ was touched for it;
installed as an out-of-tree plugin (a ``clipft.plugins`` entry point), its checkpoint reloads and
predicts through ``clipft-predict`` in a fresh process that never imported the example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose
from omegaconf import open_dict

from clipft.methods.loading import load_module

EXAMPLES = Path(__file__).parent / "extending"
GUIDE = ROOT / "docs" / "extending.md"


def promised_file_counts() -> dict[str, int]:
    """The guide's table: ``| dataset | 2 | ...`` -> {"dataset": 2}."""
    rows = re.findall(r"^\| (dataset|method|backbone|metric) \| (\d+) \|", GUIDE.read_text(), flags=re.M)
    return {kind: int(n) for kind, n in rows}


def test_each_example_has_the_number_of_files_the_guide_promises():
    promised = promised_file_counts()
    assert set(promised) == {"dataset", "method", "backbone", "metric"}
    for kind, count in promised.items():
        files = [p for p in (EXAMPLES / kind).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert len(files) == count, f"{kind}: {sorted(p.name for p in files)}"


@pytest.fixture()
def headline_registry():
    from clipft.evaluation import headline

    saved = list(headline.HEADLINE_METRICS)
    yield headline
    headline.HEADLINE_METRICS[:] = saved


def test_new_dataset_method_backbone_and_metric_train_evaluate_and_reload(tmp_path, headline_registry):
    from extending.metric.worst_class_accuracy import register

    from clipft.pipeline.train import run_train
    from clipft.results import collect

    register()  # the metric example: one file
    roots = ",".join(f"file://{EXAMPLES / kind / 'conf'}" for kind in ("dataset", "method", "backbone"))
    cfg = compose([f"hydra.searchpath=[{roots}]", "data=stripes", "model=bias_tuned_zeroshot",
                   "clip_backbone@model.clip=bag_of_words",
                   "trainer.max_epochs=3", "trainer.accelerator=cpu", "logger=none", "~callbacks.rich_progress_bar",
                   "trainer.enable_model_summary=false", "plots=false"], root=tmp_path)
    with open_dict(cfg):
        del cfg["hydra"]
    metrics = run_train(cfg)
    summary = metrics["summary"]
    assert metrics["data"]["num_classes"] == 2 and summary["test_accuracy"] is not None
    assert 0.0 <= summary["test_worst_class_accuracy"] <= summary["test_accuracy"]  # the new headline metric
    ckpt = metrics["best_checkpoint"]
    predicted = predict_in_a_fresh_process_with_the_plugin_installed(ckpt, tmp_path)  # started now, read below
    evaluated = evaluate_in_a_fresh_process_with_the_plugin_installed(ckpt, tmp_path)
    module = load_module(ckpt)  # no trust needed: both new classes are registered
    assert type(module).__name__ == "BiasTunedZeroShot" and type(module.backbone).__name__ == "BagOfWordsCLIP"
    assert module.bias.abs().sum() > 0 and not any(p.requires_grad for p in module.backbone.parameters())
    frame = collect([tmp_path / "run"])
    assert "test_worst_class_acc" in frame.columns
    assert frame["test_worst_class_acc"].iloc[0] == pytest.approx(summary["test_worst_class_accuracy"])

    out, err = predicted.communicate(timeout=600)
    assert predicted.returncode == 0, err[-3000:]
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(records) == 2 and all(r["label"] in module.class_names for r in records), out[-2000:]
    # eval.py without data=: the run's config.yaml names the plugin's datamodule (allowed because the
    # plugin registered it) and the plugin's headline metric is in the fresh process's summary
    out, err = evaluated.communicate(timeout=600)
    assert evaluated.returncode == 0, (out + err)[-3000:]
    evaluated_summary = json.loads((tmp_path / "fresh_eval" / "metrics.json").read_text())["summary"]
    assert evaluated_summary["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert evaluated_summary["test_worst_class_accuracy"] == pytest.approx(summary["test_worst_class_accuracy"])


def write_plugin(site: Path) -> None:
    """A tiny installed package: a dist-info whose entry_points.txt names a ``clipft.plugins`` callable
    that imports the example method and backbone (importing them registers them)."""
    (site / "clipft_example_plugin").mkdir(parents=True)
    (site / "clipft_example_plugin" / "__init__.py").write_text(
        "def register():\n"
        "    import extending.backbone.bag_of_words_clip  # @registry.register('backbone')\n"
        "    import extending.method.bias_tuned_zeroshot  # a ClassificationModule subclass registers itself\n"
        "    from clipft import registry\n"
        "    from extending.dataset.stripes import StripesDataModule\n"
        "    from extending.metric.worst_class_accuracy import register as register_metric\n"
        "    registry.register('datamodule', StripesDataModule)  # a run's config.yaml may name it\n"
        "    register_metric()  # the headline metric, in eval.py's summary too\n"
    )
    dist = site / "clipft_example_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clipft-example-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clipft.plugins]\nexamples = clipft_example_plugin:register\n")
    (dist / "RECORD").write_text("")


def predict_in_a_fresh_process_with_the_plugin_installed(ckpt: str, tmp_path: Path) -> subprocess.Popen:
    """``python -m clipft.cli.predict`` on two images, the plugin on PYTHONPATH: nothing in the fresh
    process imports the example's modules except the entry point."""
    from PIL import Image

    site, images = tmp_path / "site", tmp_path / "images"
    write_plugin(site)
    images.mkdir()
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (40, 40), colour).save(images / f"{i}.png")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(EXAMPLES.parent)]), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "clipft.cli.predict", "--ckpt", str(ckpt), str(images), "--json", "--device", "cpu"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def evaluate_in_a_fresh_process_with_the_plugin_installed(ckpt: str, tmp_path: Path) -> subprocess.Popen:
    """``eval.py ckpt_path=...`` with no data=: the datamodule comes from the run's config.yaml."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(EXAMPLES.parent)]), OMP_NUM_THREADS="1")
    command = [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "plots=false",
               f"hydra.run.dir={tmp_path / 'fresh_eval'}"]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_example_backbone_passes_the_backbone_contract():
    from extending.backbone.bag_of_words_clip import BagOfWordsCLIP

    from clipft.models.contract import VisionLanguageBackbone

    backbone = BagOfWordsCLIP()
    assert isinstance(backbone, VisionLanguageBackbone)
    tokens = backbone.tokenize(["stop", "give way"])
    got = backbone.encode_text_embeddings(backbone.token_embedding()(tokens["input_ids"]), **tokens)
    torch.testing.assert_close(got, backbone.encode_text(**tokens))
