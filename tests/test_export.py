"""clipft-export: each format is loaded back with its own ecosystem's loader (transformers,
open_clip, onnxruntime, safetensors) and gives the checkpoint's logits; LoRA arrives merged;
classifiers a format cannot carry are refused with the format that can; a failed export leaves no folder."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from clipft.errors import CheckpointError, ConfigError
from clipft.exporting import export_module, load_safetensors_export
from clipft.methods import CLIPAdapter, CNNTransfer, ContrastiveFineTune, LinearHeadFineTune

CLASSES = ["stop", "yield", "keep left"]
OPT = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
# fp32 on both sides of each comparison: differences are float rounding (~1e-6), a wrong head is O(1)
TOL = {"atol": 1e-4, "rtol": 1e-4}


def hf_clip(tiny_clip_dir) -> dict:
    return {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}


def pixels(n: int = 5, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def trained_head(module: LinearHeadFineTune) -> LinearHeadFineTune:
    """A head that is neither zero nor the zero-shot one, and a moved image tower: what training leaves."""
    module.prepare_for_inference()
    with torch.no_grad():
        module.head.weight.add_(torch.randn_like(module.head.weight))
        module.head.bias.copy_(torch.tensor([0.5, -0.25, 0.0]))
        module.backbone.model.visual_projection.weight.mul_(1.5)
    return module.eval()


@torch.no_grad()
def reference_logits(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.prepare_for_inference()
    return module(x).float()


def test_hf_export_loads_with_transformers_and_gives_the_checkpoints_logits(tiny_clip_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    module = trained_head(LinearHeadFineTune(CLASSES, clip=hf_clip(tiny_clip_dir), optimizer=OPT))
    x = pixels()
    expected = reference_logits(module, x)
    result = export_module(module, "hf", tmp_path / "hf")
    model = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    head = load_file(str(tmp_path / "hf" / "classifier.safetensors"))
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=x)
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        logits = nn.functional.normalize(feats, dim=-1) @ head["weight"].t() + head["bias"]
    torch.testing.assert_close(logits, expected, **TOL)
    assert json.loads((tmp_path / "hf" / "clipft_classifier.json").read_text())["class_names"] == CLASSES
    processor = CLIPImageProcessor.from_pretrained(tmp_path / "hf")
    assert processor.crop_size["height"] == 32 and processor.image_mean == pytest.approx(module.preprocessing["mean"])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer(["a stop sign"])["input_ids"] == module.backbone.tokenizer(["a stop sign"])["input_ids"]
    record = json.loads((tmp_path / "hf" / "clipft_export.json").read_text())
    assert record["verified"]["max_abs_logit_diff"] == result.max_abs_logit_diff <= 1e-4


def test_lora_is_merged_into_the_hf_export(tiny_clip_dir, tmp_path):
    pytest.importorskip("peft")
    from transformers import CLIPModel

    from clipft.methods import PEFTFineTune

    module = PEFTFineTune(CLASSES, clip=hf_clip(tiny_clip_dir), optimizer=OPT, adapt_towers=["image"]).eval()
    with torch.no_grad():  # an adapter that changes the output (peft starts lora_B at zero)
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    x = pixels()
    expected = reference_logits(module, x)
    export_module(module, "hf", tmp_path / "hf")
    model = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    assert not any("lora" in k for k in model.state_dict())
    from clipft.exporting.hf_format import exported_logits

    torch.testing.assert_close(exported_logits(tmp_path / "hf", x), expected, **TOL)
    plain = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    with torch.no_grad():  # the merge changed the weights: the export is not the pretrained model
        assert not torch.allclose(model.vision_model(pixel_values=x).pooler_output, plain.vision_model(pixel_values=x).pooler_output)


def test_open_clip_export_loads_with_open_clip_create_model(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import load_file

    from clipft.models.open_clip_backbone import save_tiny_open_clip

    source = save_tiny_open_clip(tmp_path / "source")
    module = ContrastiveFineTune(CLASSES, clip={"_target_": "clipft.models.OpenCLIPBackbone", "model_name": str(source)},
                                 optimizer=OPT).eval()
    with torch.no_grad():
        module.backbone.model.visual.proj.mul_(-1.0)  # differs from the source folder's weights
    x = pixels()
    expected = reference_logits(module, x)
    export_module(module, "open_clip", tmp_path / "oc")
    model = open_clip.create_model(f"local-dir:{tmp_path / 'oc'}").eval()
    head = load_file(str(tmp_path / "oc" / "classifier.safetensors"))
    with torch.no_grad():
        logits = model.encode_image(x, normalize=True) @ head["weight"].t() + head["bias"]
    torch.testing.assert_close(logits, expected, **TOL)
    assert open_clip.get_tokenizer(f"local-dir:{tmp_path / 'oc'}")(["a stop sign"]).shape[0] == 1
    # the other open_clip route: a named architecture + pretrained=<the weights file>
    config = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "clipft-tiny-export.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "configs")
    named = open_clip.create_model("clipft-tiny-export", pretrained=str(tmp_path / "oc" / "open_clip_model.safetensors")).eval()
    with torch.no_grad():
        torch.testing.assert_close(named.encode_image(x, normalize=True) @ head["weight"].t() + head["bias"], expected, **TOL)


def test_onnx_export_holds_the_whole_classifier_for_onnxruntime(tiny_clip_dir, tmp_path):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    module = CLIPAdapter(CLASSES, clip=hf_clip(tiny_clip_dir), optimizer=OPT).eval()  # non-linear head: MLP adapter
    with torch.no_grad():
        for param in module.adapter.parameters():
            param.normal_(0, 0.3)
    x = pixels(n=7)  # another batch size than the exporter's probe: the batch axis is dynamic
    expected = reference_logits(module, x)
    export_module(module, "onnx", tmp_path / "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"pixel_values": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, **TOL)
    meta = json.loads((tmp_path / "onnx" / "clipft_onnx.json").read_text())
    assert meta["class_names"] == CLASSES and meta["preprocessing"]["image_size"] == 32


def test_safetensors_export_rebuilds_a_cnn_and_refuses_a_tampered_record(tmp_path):
    from safetensors.torch import load_file

    module = CNNTransfer(CLASSES, backbone={"_target_": "clipft.models.build_torchvision_backbone", "name": "mobilenet_v3_small",
                                            "pretrained": False}, optimizer=OPT, image_size=32).eval()
    x = pixels()
    expected = reference_logits(module, x)
    export_module(module, "safetensors", tmp_path / "st")
    assert set(load_file(str(tmp_path / "st" / "model.safetensors"))) == set(module.state_dict())
    torch.testing.assert_close(load_safetensors_export(tmp_path / "st")(x), expected, **TOL)
    record_file = tmp_path / "st" / "clipft_module.json"
    record = json.loads(record_file.read_text())
    record["hyper_parameters"]["backbone"]["_target_"] = "os.system"
    record_file.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="os.system"):
        load_safetensors_export(tmp_path / "st")


def test_a_format_that_cannot_carry_the_classifier_names_one_that_can(tiny_clip_dir, tmp_path):
    adapter = CLIPAdapter(CLASSES, clip=hf_clip(tiny_clip_dir), optimizer=OPT)
    with pytest.raises(CheckpointError, match="--format onnx"):
        export_module(adapter, "hf", tmp_path / "a")
    head = LinearHeadFineTune(CLASSES, clip=hf_clip(tiny_clip_dir), optimizer=OPT)
    with pytest.raises(CheckpointError, match="--format hf"):
        export_module(head, "open_clip", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder left behind


def test_an_export_that_does_not_reproduce_the_logits_is_not_kept(tiny_clip_dir, tmp_path, monkeypatch):
    module = trained_head(LinearHeadFineTune(CLASSES, clip=hf_clip(tiny_clip_dir), optimizer=OPT))
    wrong = (module.head.weight.detach() * 2, module.head.bias.detach())
    monkeypatch.setattr(module, "linear_head", lambda: wrong)
    with pytest.raises(CheckpointError, match="does not reproduce"):
        export_module(module, "hf", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_out_folder_is_never_overwritten_unless_asked(tiny_clip_dir, tmp_path):
    module = LinearHeadFineTune(CLASSES, clip=hf_clip(tiny_clip_dir), optimizer=OPT)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--overwrite"):
        export_module(module, "safetensors", out)
    assert (out / "notes.txt").read_text() == "mine"
    export_module(module, "safetensors", out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "model.safetensors").is_file()


def test_clipft_export_cli_on_a_trained_checkpoint(colour_run, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    from clipft.cli.export import main
    from clipft.exporting.onnx_format import exported_logits
    from clipft.methods.loading import load_module

    assert main([str(colour_run["ckpt"]), str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    module = load_module(colour_run["ckpt"])
    x = pixels(size=module.preprocessing["image_size"])
    torch.testing.assert_close(exported_logits(tmp_path / "onnx", x), reference_logits(module, x), **TOL)
    assert main([str(colour_run["ckpt"]), str(tmp_path / "onnx"), "--format", "onnx"]) == 1  # exists: refused
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.ckpt"), str(tmp_path / "x"), "--format", "hf"]) == 1
    assert not (tmp_path / "x").exists()
