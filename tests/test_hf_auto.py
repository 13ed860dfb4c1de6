"""Any transformers image-text model through AutoModel; repository code runs only when the user opts in."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from clipft.errors import ConfigError
from clipft.models import HFAutoBackbone, HFCLIPBackbone
from clipft.utils.file_gate import check_checkpoint
from clipft.utils.safe_targets import UntrustedCheckpointError


def test_auto_model_gives_the_same_embeddings_as_the_dedicated_backbone(tiny_clip_dir):
    auto, clip = HFAutoBackbone(str(tiny_clip_dir)).eval(), HFCLIPBackbone(name_or_path=str(tiny_clip_dir)).eval()
    x, texts = torch.randn(2, 3, 32, 32), ["a stop sign", "yield"]
    with torch.no_grad():
        torch.testing.assert_close(auto.encode_image(x), clip.encode_image(x))
        torch.testing.assert_close(auto.encode_text(**auto.tokenize(texts)), clip.encode_text(**clip.tokenize(texts)))


def test_a_repository_with_its_own_code_is_refused_without_opt_in(tiny_clip_dir, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(tiny_clip_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["model_type"] = "marker_clip"  # not a transformers architecture: only the repository's code knows it
    config["auto_map"] = {"AutoConfig": "modeling_marker.MarkerConfig", "AutoModel": "modeling_marker.MarkerModel"}
    (remote / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "RAN"
    (remote / "modeling_marker.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import CLIPConfig as MarkerConfig, CLIPModel as MarkerModel\n")
    with pytest.raises(ConfigError, match="trust_remote_code=true"):
        HFAutoBackbone(str(remote))
    assert not marker.exists()  # nothing of the repository ran


def test_a_checkpoint_asking_for_remote_code_is_refused_before_anything_runs():
    hparams = {"class_names": ["a", "b"], "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3},
               "clip": {"_target_": "clipft.models.HFAutoBackbone", "name_or_path": "org/x", "trust_remote_code": True}}
    with pytest.raises(UntrustedCheckpointError, match="trust_remote_code=true"):
        check_checkpoint("clipft.methods.contrastive_finetune.ContrastiveFineTune", hparams, "x.ckpt")
