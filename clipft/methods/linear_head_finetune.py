"""LinearHeadFineTune: cross-entropy fine-tuning of the image tower under a linear head.

The head starts from the zero-shot classifier (``init_head_from: zeroshot``: weights =
temperature x class text, so epoch 0 scores the zero-shot accuracy; the WiSE-FT paper's
"end-to-end" fine-tuning), from a linear probe's checkpoint (LP-FT, Kumar et al. 2022: the
random head cannot distort the features early on), or from zeros (``null``). ``freeze_head``
keeps it fixed: the "frozen zero-shot head" recipe behind the published 98.8 % GTSRB fine-tune
of ViT-B/32. The text tower is used only to initialise the head and is never trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from clipft.errors import CheckpointError
from clipft.methods.clip_method import CLIPMethod
from clipft.methods.lipsum import TEXT_COUNT, TOKEN_LENGTH, LipsumFT, check_lipsum_arguments


class LinearHeadFineTune(CLIPMethod):
    """Image tower + linear head trained with cross-entropy.

    Args:
        init_head_from: ``zeroshot`` | a ``model=clip_linear_probe`` checkpoint path (LP-FT) | null (zeros).
        freeze_head: keep the initial head fixed (only the image tower trains).
        lipsum_weight, lipsum_tokens, lipsum_texts, lipsum_seed: Lipsum-FT's random-text regulariser
            (:mod:`clipft.methods.lipsum`; weight 0 = off).
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod`.
    """

    passes_on = (
        "class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing", "freeze_image_tower",
        "learning_rates", "layer_decay",
    )

    def __init__(
        self,
        *args: Any,
        init_head_from: str | None = "zeroshot",
        freeze_head: bool = False,
        freeze_logit_scale: bool = True,
        lipsum_weight: float = 0.0,
        lipsum_tokens: int = TOKEN_LENGTH,
        lipsum_texts: int = TEXT_COUNT,
        lipsum_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, freeze_text_tower=True, freeze_logit_scale=freeze_logit_scale, **kwargs)
        self.init_head_from = init_head_from
        self.freeze_head = bool(freeze_head)
        self.head = nn.Linear(int(self.backbone.embed_dim), self.num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if self.freeze_head:
            self.head.requires_grad_(False)
        # 1 once the head was initialised (zero-shot / linear probe); saved, so a resumed run keeps its head
        self.register_buffer("head_initialised", torch.zeros((), dtype=torch.long))
        self.lipsum = LipsumFT(lipsum_weight, lipsum_tokens, lipsum_texts, lipsum_seed)

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        super().check_arguments(arguments)
        check_lipsum_arguments(arguments)

    @torch.no_grad()
    def initialise_head(self) -> None:
        """Weights from the zero-shot head (x temperature) or a linear-probe checkpoint, once."""
        if bool(self.head_initialised):
            return
        source = self.init_head_from
        if source in (None, "", "none"):
            pass
        elif source == "zeroshot":
            self.head.weight.copy_(self.logit_scale() * self.class_text_features().to(self.head.weight))
            self.head.bias.zero_()
        else:
            weight, bias = probe_head_from_checkpoint(str(source), self.class_names, self.head.weight.shape)
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        self.head_initialised.fill_(1)

    def prepare_for_inference(self) -> None:
        self.initialise_head()  # a module evaluated without training still gets its head

    def on_fit_start(self) -> None:
        self.initialise_head()

    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": list(self.head.named_parameters())}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.encode_image(images))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.weight.detach().float(), self.head.bias.detach().float()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.lipsum.weight == 0:
            return super().training_step(batch, batch_idx)
        images, labels = batch[0], batch[1]  # Lipsum-FT: cross-entropy + the energy gap on the same features
        image = self.backbone.encode_image(images)
        loss = self.classification_loss(self.head(image), labels) + self.lipsum.loss(self, images, image)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss


def probe_head_from_checkpoint(path: str, class_names: Sequence[str], shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """LP-FT: the ``head.weight``/``head.bias`` of a :class:`CLIPLinearProbe` checkpoint."""
    from clipft.methods.loading import read_checkpoint
    from clipft.utils.file_gate import gate_weights_checkpoint

    ckpt = read_checkpoint(path)
    gate_weights_checkpoint(ckpt, str(path))
    state = ckpt.get("state_dict", {})
    names = ckpt.get("hyper_parameters", {}).get("class_names")
    if "head.weight" not in state or "head.bias" not in state:
        raise CheckpointError(
            f"init_head_from={path!r} has no linear head (head.weight/head.bias); give a "
            "model=clip_linear_probe checkpoint, or init_head_from=zeroshot"
        )
    if names is not None and list(names) != list(class_names):
        raise CheckpointError(f"init_head_from={path!r} was trained on other classes than this dataset")
    l2 = state.get("l2_features")  # absent: a probe written before the switch, always on L2-normalised features
    if l2 is not None and not bool(l2):
        raise CheckpointError(
            f"init_head_from={path!r} is a probe on raw features (feature_norm=none, the lpclip reference's), but "
            "LP-FT's head reads L2-normalised ones; fit the probe with model.feature_norm=l2"
        )
    if tuple(state["head.weight"].shape) != tuple(shape):
        raise CheckpointError(
            f"init_head_from={path!r}: head shape {tuple(state['head.weight'].shape)} does not fit "
            f"{tuple(shape)}; the linear probe must use the same backbone"
        )
    return state["head.weight"], state["head.bias"]
