"""What the pre-14163ab zero-shot head cost: the head built with the text tower in train mode.

Before commit 14163ab, a head built at ``on_fit_start`` (the module still in train mode) encoded
the class prompts with the text tower's dropout live. This scores one backbone folder's zero-shot
head on val both ways: the eval-mode head (what every head is now) and five train-mode draws.

    python docs/tools/zeroshot_head_dropout.py gtsrb_frozen_head_sign_clip models/sign_clip_signs58
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from clipft.methods.zeroshot_head import class_means, encode_texts
from clipft.pipeline.building import build_datamodule, build_model

CONF = Path(__file__).resolve().parents[2] / "clipft" / "conf"


def class_head(module, train_mode: bool) -> torch.Tensor:
    """The zero-shot head as zeroshot_weights builds it, with the backbone in the given mode."""
    backbone = module.backbone.train(train_mode)
    flat = [p for prompts in module.class_prompts for p in prompts]
    with torch.no_grad():
        head = class_means(encode_texts(backbone, flat, "cpu"), [len(p) for p in module.class_prompts])
    backbone.eval()
    return head


def main(experiment: str, folder: str, *overrides: str) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [f"experiment={experiment}", f"model.clip.name_or_path={folder}",
                                "data.num_workers=0", "data.persistent_workers=false", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_model(cfg, datamodule.class_names).eval()
    datamodule.configure_preprocessing(**module.preprocessing)
    with torch.no_grad():
        batches = [(module.backbone.encode_image(b[0]).float(), b[1]) for b in datamodule.val_dataloader()]
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    def accuracy(head: torch.Tensor) -> float:
        return (images @ head.t()).argmax(1).eq(labels).float().mean().item() * 100

    reference = class_head(module, train_mode=False)
    print(f"eval-mode head: val {accuracy(reference):.2f} % ({len(labels)} images)")
    torch.manual_seed(0)
    draws = []
    for _ in range(5):
        head = class_head(module, train_mode=True)
        draws.append(accuracy(head))
        cosine = (head * reference).sum(1)
        print(f"train-mode head: val {draws[-1]:.2f} %, cosine to the eval-mode head: min {cosine.min():.3f}, mean {cosine.mean():.3f}")
    spread = torch.tensor(draws)
    print(f"train-mode heads: val {spread.mean():.2f} +- {spread.std():.2f} %")


if __name__ == "__main__":
    main(*sys.argv[1:])
