"""clipft.registry, the one list of what clipft builds, and contract tests parametrised over it (timm style).

Every registered method is importable, named by a conf/model config and allowed in checkpoints;
every registered backbone with a tiny configuration builds and follows its contract; the
checkpoint and datamodule allowlists, the metric and exporter lists and the CLIs' --help are read
from the registry; a ``clipft.plugins`` entry point registers an out-of-tree package's classes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import extending.backbone.bag_of_words_clip  # noqa: F401 - the docs' example backbone joins the contract tests
import pytest
import torch
import yaml
from conftest import ROOT

from clipft import registry
from clipft.utils.safe_targets import (
    MODULE_TARGETS,
    SAFE_TARGETS,
    UntrustedCheckpointError,
    check_target_allowed,
    register_safe_target,
)

CLIPFT_METHODS = sorted(n for n, e in registry.entries("method").items() if e.source == "clipft")
TINY_BACKBONES = sorted(n for n, e in registry.entries("backbone").items() if e.tiny is not None)


def test_every_kind_has_clipfts_own_entries():
    for kind in registry.KINDS:
        assert registry.names(kind), kind
    assert "LinearHeadFineTune" in CLIPFT_METHODS and "HFCLIPBackbone" in TINY_BACKBONES


def _model_config_targets() -> set[str]:
    return {
        yaml.safe_load(p.read_text()).get("_target_")
        for p in (ROOT / "clipft" / "conf" / "model").glob("*.yaml")
        if isinstance(yaml.safe_load(p.read_text()), dict)
    }


@pytest.mark.parametrize("name", CLIPFT_METHODS)
def test_every_registered_method_is_importable_configured_and_allowed_in_checkpoints(name):
    from clipft.methods.classification import ClassificationModule

    entry = registry.entries("method")[name]
    cls = entry.load()
    assert isinstance(cls, type) and issubclass(cls, ClassificationModule)
    assert set(entry.paths) & _model_config_targets(), f"no conf/model/*.yaml has _target_ {name}"
    for path in entry.paths:
        assert path in MODULE_TARGETS and path in SAFE_TARGETS
    assert registry.get("method", entry.paths[0]) is cls


@pytest.mark.parametrize("name", TINY_BACKBONES)
def test_every_registered_backbone_builds_tiny_and_follows_its_contract(name, tmp_path):
    from clipft.models.contract import ImageBackbone, VisionLanguageBackbone

    entry = registry.entries("backbone")[name]
    torch.manual_seed(0)
    backbone = entry.tiny(tmp_path).eval()
    assert set(entry.paths) <= set(SAFE_TARGETS)  # a checkpoint naming it loads without trust
    if isinstance(backbone, VisionLanguageBackbone):
        assert f"{type(backbone).__module__}.{type(backbone).__qualname__}" in SAFE_TARGETS
        size = int(backbone.preprocessing["image_size"])
        with torch.no_grad():
            image = backbone.encode_image(torch.randn(2, 3, size, size))
            text = backbone.encode_text(**backbone.tokenize(["a stop sign", "yield"]))
        assert image.shape == text.shape == (2, backbone.embed_dim)
        torch.testing.assert_close(image.norm(dim=-1), torch.ones(2))
    else:
        assert isinstance(backbone, ImageBackbone)
        assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, backbone.feature_dim)


def test_datamodule_allowlist_metrics_exporters_and_torch_targets_come_from_the_registry():
    from clipft.data.base import ImageClassificationDataModule
    from clipft.evaluation.headline import HEADLINE_METRICS
    from clipft.exporting import FORMATS
    from clipft.pipeline.run_data import known_datamodules

    assert known_datamodules() == registry.paths("datamodule")
    assert {"clipft.data.FolderDataModule", "clipft.data.streaming.StreamingDataModule"} <= known_datamodules()
    for name in registry.names("datamodule"):
        assert issubclass(registry.get("datamodule", name), ImageClassificationDataModule)
    assert {m.name for m in HEADLINE_METRICS} <= set(registry.names("metric"))
    assert set(FORMATS) == set(registry.names("exporter"))
    assert registry.get("optimizer", "torch.optim.AdamW") is torch.optim.AdamW
    assert "torch.optim.lr_scheduler.CosineAnnealingLR" in SAFE_TARGETS
    assert "torch.optim.lr_scheduler.LambdaLR" not in SAFE_TARGETS  # takes a callable


def test_a_checkpoints_string_is_looked_up_never_imported():
    name = "clipft_registry_test_never_imported.Evil"
    for target in (name, "os.system", "builtins.eval", 3):
        with pytest.raises(UntrustedCheckpointError):
            check_target_allowed(target, "x", "crafted.ckpt")
        assert registry.find_path(target) is None
    assert "clipft_registry_test_never_imported" not in sys.modules


def test_register_safe_target_is_the_registry():
    path = "tests_only_registry.TestModule"
    register_safe_target(path, module=True)  # what ClassificationModule.__init_subclass__ calls
    try:
        assert path in MODULE_TARGETS and path in SAFE_TARGETS
        assert registry.find_path(path).kind == "method"
    finally:
        SAFE_TARGETS.discard(path)
    assert path not in MODULE_TARGETS and registry.find_path(path) is None


def test_clis_help_and_the_listing_show_the_registry(capsys):
    from clipft.cli.export import build_parser as export_parser
    from clipft.cli.predict import build_parser

    text = build_parser().format_help()
    assert "LinearHeadFineTune" in text and "HFCLIPBackbone" in text and "clipft.plugins" in text
    assert "onnx" in export_parser().format_help()
    assert registry.main(["method", "datamodule"]) == 0
    out = capsys.readouterr().out
    assert "CoOp" in out and "FolderDataModule" in out and "HFCLIPBackbone" not in out


def _write_dist(site: Path, dist: str, entry_points: str) -> None:
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[clipft.plugins]\n{entry_points}\n")


def test_plugins_register_through_the_entry_point_group_and_a_broken_one_only_warns(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "registry_test_plugin").mkdir(parents=True)
    (site / "registry_test_plugin" / "__init__.py").write_text(
        "from torch import nn\n"
        "from clipft import registry\n\n"
        "@registry.register('backbone')\n"
        "class PluginBackbone(nn.Module):\n"
        "    pass\n"
    )
    _write_dist(site, "registry_test_plugin", "backbones = registry_test_plugin")
    _write_dist(site, "registry_broken_plugin", "broken = registry_broken_plugin_missing:register")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_PLUGINS_LOADED", False)
    monkeypatch.setattr(registry, "_PLUGIN_ERRORS", {})
    path = "registry_test_plugin.PluginBackbone"
    try:
        with pytest.warns(RuntimeWarning, match="broken"):
            assert path in SAFE_TARGETS  # the first lookup loads the plugins
        assert registry.entries("backbone")["PluginBackbone"].source == "registry_test_plugin"
        assert "broken" in registry.plugin_errors() and "registry_test_plugin" in registry.listing(["backbone"])
    finally:
        registry.unregister_path(path)
        sys.modules.pop("registry_test_plugin", None)
