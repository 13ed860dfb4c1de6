"""Every backbone against its written contract (clipft.models.contract), as timm tests every model.

Vision-language backbones: HF CLIP (folder and random config), open_clip (local folder), the dual
encoder (towers and a saved backbone folder). Image backbones: the torchvision CNNs. Each is
tiny, built here; every backbone in :mod:`clipft.registry` must have a factory below (checked by
``test_every_registered_backbone_is_exercised_here``), and tests/test_registry.py builds each
registered ``tiny`` instance against the same contract.
"""

from __future__ import annotations

import pytest
import torch

from clipft.methods.classification import module_class_path
from clipft.models import (
    DualEncoderBackbone,
    HFAutoBackbone,
    HFCLIPBackbone,
    HFSiglipBackbone,
    OpenCLIPBackbone,
    build_torchvision_backbone,
)
from clipft.models.backbone_folder import save_backbone_folder
from clipft.models.contract import ImageBackbone, PooledImageBackbone, VisionLanguageBackbone
from clipft.models.hf_siglip import save_tiny_siglip
from clipft.models.open_clip_backbone import save_tiny_open_clip
from clipft.models.towers import save_tiny_text_encoder
from clipft.utils.safe_targets import SAFE_TARGETS

TEXTS = ["a photo of a stop sign", "yield", "a blue round sign with a white arrow"]


def _dual(tmp):
    return DualEncoderBackbone(
        image_tower={"source": "torchvision", "name": "mobilenet_v3_small", "pretrained": False},
        text_tower={"name_or_path": str(save_tiny_text_encoder(tmp / "bert")), "max_length": 16},
        embed_dim=16, image_size=32,
    )


def _dual_folder(tmp):
    return DualEncoderBackbone(name_or_path=str(save_backbone_folder(_dual(tmp), tmp / "sign_clip")))


def _example_backbone():
    from extending.backbone.bag_of_words_clip import BagOfWordsCLIP

    return BagOfWordsCLIP()


VISION_LANGUAGE = {
    "hf_clip_folder": lambda tmp, tiny_clip_dir: HFCLIPBackbone(name_or_path=str(tiny_clip_dir)),
    "hf_clip_random": lambda tmp, tiny_clip_dir: HFCLIPBackbone(config={}),
    "hf_auto_model_folder": lambda tmp, tiny_clip_dir: HFAutoBackbone(str(tiny_clip_dir)),
    "hf_siglip_folder": lambda tmp, tiny_clip_dir: HFSiglipBackbone(name_or_path=str(save_tiny_siglip(tmp / "siglip"))),
    "hf_siglip_random": lambda tmp, tiny_clip_dir: HFSiglipBackbone(config={}),
    "open_clip_folder": lambda tmp, tiny_clip_dir: OpenCLIPBackbone(str(save_tiny_open_clip(tmp / "oc"))),
    "dual_encoder": lambda tmp, tiny_clip_dir: _dual(tmp),
    "dual_encoder_folder": lambda tmp, tiny_clip_dir: _dual_folder(tmp),
    "example_bag_of_words": lambda tmp, tiny_clip_dir: _example_backbone(),  # docs/extending.md
}
IMAGE = {
    "mobilenet_v3_small": lambda: build_torchvision_backbone("mobilenet_v3_small", False),
    "resnet18": lambda: build_torchvision_backbone("resnet18", False),
}


# the factories above, by the registered class (or builder) they exercise
COVERED = {
    "HFCLIPBackbone": ("hf_clip_folder", "hf_clip_random"), "HFAutoBackbone": ("hf_auto_model_folder",),
    "HFSiglipBackbone": ("hf_siglip_folder", "hf_siglip_random"), "OpenCLIPBackbone": ("open_clip_folder",),
    "DualEncoderBackbone": ("dual_encoder", "dual_encoder_folder"),
    "TorchvisionBackbone": ("mobilenet_v3_small", "resnet18"), "build_torchvision_backbone": ("mobilenet_v3_small", "resnet18"),
}


def test_every_registered_backbone_is_exercised_here():
    """timm-style: a backbone registered in clipft (clipft.registry, kind backbone) without a factory in this
    file's lists fails here, so none can be added untested."""
    from clipft import registry

    own = {name for name, entry in registry.entries("backbone").items() if entry.source == "clipft"}
    assert own - set(COVERED) == set(), "add a factory for each new backbone to VISION_LANGUAGE / IMAGE and to COVERED"
    for name in own:
        assert all(f in VISION_LANGUAGE or f in IMAGE for f in COVERED[name]), name


@pytest.fixture(params=sorted(VISION_LANGUAGE))
def backbone(request, tmp_path, tiny_clip_dir):
    torch.manual_seed(0)
    return VISION_LANGUAGE[request.param](tmp_path, tiny_clip_dir).eval()


def _pixels(backbone, n=2):
    size = int(backbone.preprocessing["image_size"])
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_implements_the_protocol_and_is_rebuildable_from_a_checkpoint(backbone):
    assert isinstance(backbone, VisionLanguageBackbone)
    assert module_class_path(type(backbone)) in SAFE_TARGETS  # a checkpoint naming it loads without trust
    assert isinstance(backbone.embed_dim, int) and backbone.embed_dim > 0
    assert isinstance(backbone.is_pretrained, bool)
    pre = backbone.preprocessing
    assert int(pre["image_size"]) > 0 and len(pre["mean"]) == len(pre["std"]) == 3


def test_embeddings_have_the_shared_width_and_unit_norm(backbone):
    with torch.no_grad():
        image = backbone.encode_image(_pixels(backbone))
        text = backbone.encode_text(**backbone.tokenize(TEXTS))
        raw = backbone.encode_image(_pixels(backbone), normalize=False)
    assert image.shape == (2, backbone.embed_dim) and text.shape == (3, backbone.embed_dim)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), image)


def test_pooled_output_then_projection_is_the_image_embedding(backbone):
    """Optional capability (contract.PooledImageBackbone): HF CLIP and the dual encoder have it, and for them
    ``project_image(encode_image_pooled(x))`` is ``encode_image(x)``, normalised or raw."""
    if not isinstance(backbone, PooledImageBackbone):
        assert type(backbone).__name__ not in ("HFCLIPBackbone", "DualEncoderBackbone")
        pytest.skip(f"{type(backbone).__name__} does not give its pooled image output")
    x = _pixels(backbone)
    with torch.no_grad():
        pooled = backbone.encode_image_pooled(x)
        assert pooled.dim() == 2 and pooled.shape[0] == 2
        torch.testing.assert_close(backbone.project_image(pooled), backbone.encode_image(x))
        torch.testing.assert_close(backbone.project_image(pooled, normalize=False), backbone.encode_image(x, normalize=False))


def test_parameter_groups_are_disjoint_and_each_gets_gradients(backbone):
    image_ids = {id(p) for p in backbone.image_parameters()}
    text_ids = {id(p) for p in backbone.text_parameters()}
    projection = backbone.projection_parameters()
    assert image_ids and text_ids and not image_ids & text_ids
    assert {id(p) for p in projection} <= image_ids | text_ids  # projections sit inside a tower's group
    assert id(backbone.logit_scale) not in image_ids | text_ids
    assert backbone.logit_bias is None or id(backbone.logit_bias) not in image_ids | text_ids
    backbone.train()
    image = backbone.encode_image(_pixels(backbone, 4))
    text = backbone.encode_text(**backbone.tokenize(TEXTS[:2] * 2))
    (backbone.logit_scale.exp() * image @ text.t()).logsumexp(-1).sum().backward()
    for name, params in (("image", backbone.image_parameters()), ("text", backbone.text_parameters())):
        grads = [p.grad for p in params if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no gradient reaches the {name} group"
    assert backbone.logit_scale.grad is not None


def test_encoding_from_token_embeddings_equals_encoding_from_token_ids(backbone):
    tokens = backbone.tokenize(TEXTS)
    table = backbone.token_embedding()
    assert isinstance(table, torch.nn.Embedding)
    embeddings = table(tokens["input_ids"]).detach().requires_grad_(True)
    with torch.no_grad():
        want = backbone.encode_text(**tokens)
    got = backbone.encode_text_embeddings(embeddings, **tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    got.sum().backward()  # prompt learning trains these embeddings: gradients must reach them
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="do not match"):
        backbone.encode_text_embeddings(embeddings[:, :-1], **tokens)


@pytest.mark.parametrize("name", sorted(IMAGE))
def test_image_backbones_follow_their_contract(name):
    torch.manual_seed(0)
    backbone = IMAGE[name]()
    assert isinstance(backbone, ImageBackbone)
    assert module_class_path(type(backbone)) in SAFE_TARGETS
    features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, backbone.feature_dim)
    blocks = backbone.blocks()
    assert len(blocks) >= 2 and all(isinstance(b, torch.nn.Module) for b in blocks)
    features.sum().backward()
    assert any(p.grad is not None for p in blocks[-1].parameters())
