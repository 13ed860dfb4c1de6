"""Every registered method, the same contract (as timm tests every model): it trains on the demo set, its
checkpoint reloads to the same logits, it exports to safetensors (any method, checked by the exporter against
the checkpoint), and to HF CLIP's format where its classifier is one linear map of the image embedding."""

from __future__ import annotations

import inspect

import lightning as L
import pytest
import torch

import clipft
from clipft import registry
from clipft.data import SyntheticSignsDataModule
from clipft.exporting import export_module, load_safetensors_export
from clipft.methods.loading import load_module

SGD = {"_target_": "torch.optim.SGD", "lr": 0.01}
TINY = {  # what a tiny backbone or a one-epoch run needs beyond the defaults
    "CNNTransfer": {"backbone": {"_target_": "clipft.models.build_torchvision_backbone", "name": "mobilenet_v3_small", "pretrained": False}},
    "MaPLe": {"prompt_depth": 1},
    "PromptSRC": {"prompt_depth_text": 1, "prompt_depth_image": 1},
    "ProLIP": {"shots": 2},
    "LPPlusPlus": {"epochs": 5},
    "CLAP": {"epochs": 5},
}
NOTHING_TO_LEARN = {"CLIPZeroShot"}  # a zero-shot head: fitting is a no-op by design
METHODS = sorted(n for n, e in registry.entries("method").items() if e.source == "clipft")


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    return SyntheticSignsDataModule(root=str(root / "signs"), num_classes=3, train_per_class=4, test_per_class=1, batch_size=4,
                                    dedupe="none", cache_dir=str(root / "cache"))


def build(name: str, tiny_clip_dir, class_names):
    cls = registry.entries("method")[name].load()
    kwargs = {"optimizer": SGD, **TINY.get(name, {})}
    if "clip" in inspect.signature(cls).parameters and name != "CNNTransfer":
        kwargs["clip"] = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    torch.manual_seed(0)
    return cls(class_names, **kwargs)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_reloads_and_exports(name, datamodule, tiny_clip_dir, tmp_path):
    module = build(name, tiny_clip_dir, datamodule.class_names)
    clipft.wire(datamodule, module)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path), callbacks=[])
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer.fit(module, datamodule=datamodule)
    after = module.state_dict()
    learned = [k for k, v in after.items() if k not in before or before[k].shape != v.shape or not torch.equal(before[k], v)]
    assert learned or name in NOTHING_TO_LEARN, f"{name}: fitting changed no weight, buffer or cache"
    ckpt = tmp_path / "contract.ckpt"
    trainer.save_checkpoint(ckpt)

    images = next(iter(datamodule.test_dataloader()))[0][:2]
    reloaded = load_module(str(ckpt))  # through the file gate, as every CLI loads
    for m in (module, reloaded):
        m.eval()
        m.prepare_for_inference()
    with torch.no_grad():
        logits = module(images)
        torch.testing.assert_close(reloaded(images), logits, atol=1e-5, rtol=1e-5)
    assert logits.shape == (2, len(datamodule.class_names)) and torch.isfinite(logits).all()

    export_module(reloaded, "safetensors", tmp_path / "st")  # the exporter checks the folder against the module
    with torch.no_grad():
        torch.testing.assert_close(load_safetensors_export(tmp_path / "st")(images), logits, atol=1e-4, rtol=1e-4)
    if reloaded.linear_head() is not None and name != "CNNTransfer":
        result = export_module(reloaded, "hf", tmp_path / "hf")  # raises when the exported logits differ
        assert (tmp_path / "hf" / "classifier.safetensors").is_file() and result is not None
