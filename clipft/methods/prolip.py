"""ProLIP: train only the image tower's final projection, pulled back towards its pretrained value (Fahes et al. 2025).

"CLIP's Visual Embedding Projector is a Few-shot Cornucopia": everything is frozen but the matrix
that maps the image tower's pooled output into the shared space. The objective is cross-entropy
on ``logit_scale * cos(image, class text)`` plus ``reg_weight * ||W - W0||^2`` (a sum of squares,
``nn.MSELoss(reduction="sum")``), with ``reg_weight = 1 / shots`` in the validation-free setting.
The reference is astra-vision/ProLIP @ b43e795cbf0b53a9b0aa83cf4f47d9755896ba6f:

- ``methods/ProLIP.py:81-89`` (the projection: ``visual.proj`` of a ViT, ``attnpool.c_proj``'s weight
  of a ResNet, its bias frozen, ``:14-40``), ``:139-145`` (``lambda = 1/N`` or ``1/N^2`` or given),
  ``:165-166`` (``Adam(lr, eps=1e-4)``, ``CosineAnnealingLR(train_epoch)``), ``:186-216`` (one step per
  epoch on all ``N x C`` features of one augmented view: ``100 * normalize(x @ W) @ text``, CE +
  lambda x MSE-sum, then the scheduler);
- ``utils.py:31-56`` (the class text: mean of the normalised prompt embeddings, renormalised, frozen);
- ``configs/base.yaml`` / ``configs/experiments/few_shot_no_val_lr1e-3_lambda_1_N.yaml`` (300 epochs,
  300 augmented views, ``lambda_funct_1_N``; the README's validation-free runs use lr 1e-5 ... 1e-2).

The reference's shortcut: the frozen tower's pre-projection features of 300 augmented views are
saved once and training reads them (``scripts/save_features*.sh``). Here the same with
``callbacks=[default,feature_bank]`` (``views``: the augmented views stored; the bank holds the pooled
output, :class:`clipft.models.contract.PooledImageBackbone`), or, without a bank or on a backbone without
pooled features (open_clip), each step runs the frozen tower (eval mode, no autograd graph: only the
projection requires gradients) on the batch's augmented images, the same computation; one epoch of the
full few-shot set in one batch is one reference epoch (``data.batch_size`` >= shots x classes,
``trainer.max_epochs=300``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.clip_method import CLIPMethod
from clipft.models.contract import PooledImageBackbone

PER_SHOT = {"1/shots": 1, "1/shots^2": 2}  # lambda_funct_1_N, lambda_funct_1_N2 (ProLIP.py:140-143)
_OWN_ARGS = ("reg_weight", "shots")


def visual_projection(backbone: nn.Module) -> nn.Parameter:
    """The image tower's last projection matrix: what ProLIP trains (one per supported backbone)."""
    kind = type(backbone).__name__
    if kind == "HFCLIPBackbone":
        return backbone.model.visual_projection.weight  # (embed, width): features = pooled @ W^T
    if kind == "DualEncoderBackbone":
        return backbone.visual_projection.weight  # its bias stays frozen, as the reference's ResNet one
    if kind == "OpenCLIPBackbone":
        visual = backbone.model.visual
        proj = getattr(visual, "proj", None)  # ViT: (width, embed), features = pooled @ proj
        if isinstance(proj, nn.Parameter):
            return proj
        attnpool = getattr(visual, "attnpool", None)  # ModifiedResNet: attention pooling's output Linear
        if attnpool is not None:
            return attnpool.c_proj.weight
        raise ConfigError(
            f"ProLIP: the open_clip image tower {type(visual).__name__} has no final projection matrix (proj or "
            "attnpool.c_proj); use model=clip_norm_tuning, model=clip_bitfit or model=clip_linear_probe"
        )
    raise ConfigError(
        f"ProLIP trains the image tower's final projection, which {kind} does not have as one matrix (SigLIP's pooled "
        "output is already the embedding); use HFCLIPBackbone / OpenCLIPBackbone / DualEncoderBackbone, or "
        "model=clip_norm_tuning / model=clip_bitfit / model=clip_linear_probe for this backbone"
    )


def regularisation_weight(reg_weight: Any, shots: Any) -> float:
    """``reg_weight`` as a number: given, or ``1/shots`` / ``1/shots^2`` of a few-shot run."""
    if isinstance(reg_weight, str):
        if reg_weight not in PER_SHOT:
            raise ConfigError(f"reg_weight={reg_weight!r}: give a number >= 0 or one of {sorted(PER_SHOT)}")
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
            raise ConfigError(
                f"reg_weight={reg_weight} needs the number of shots (shots={shots!r}): run few-shot (data.shots=16) "
                "or set reg_weight to a number (the reference's grid: 10, 1, 0.1, 0.01, 0.001, 1e-4, 0)"
            )
        return 1.0 / shots ** PER_SHOT[reg_weight]
    if isinstance(reg_weight, bool) or not isinstance(reg_weight, (int, float)) or not reg_weight >= 0:
        raise ConfigError(f"reg_weight={reg_weight!r} is not allowed: expected a number >= 0, 1/shots or 1/shots^2")
    return float(reg_weight)


class ProLIP(CLIPMethod):
    """Cross-entropy on the frozen text head + ``reg_weight * ||W - W0||^2``, training only the visual projection ``W``.

    Args:
        reg_weight: lambda, a number >= 0, ``1/shots`` (the reference's validation-free choice) or ``1/shots^2``.
        shots: images per class of the few-shot training set (the config passes ``data.shots``).
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod`; both towers, the text
        projection and the temperature stay frozen.
    """

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing")
    # the tower below the projection is frozen: a feature bank of its pooled output serves it, as the reference
    # trains from saved pre-projection features (scripts/save_features*.sh); rows are projected here
    reads_image_features = True

    def __init__(
        self,
        *args: Any,
        reg_weight: float | str = "1/shots",
        shots: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.reg_weight = regularisation_weight(reg_weight, shots)
        super().__init__(*args, freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True, **kwargs)
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        projection = visual_projection(self.backbone).requires_grad_(True)
        self.register_buffer("initial_projection", projection.detach().clone())  # W0 (ProLIP.py:85, :89)

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """``reg_weight`` (with ``shots``), after the base's checks."""
        super().check_arguments(arguments)
        if "reg_weight" in arguments:
            regularisation_weight(arguments["reg_weight"], arguments.get("shots"))

    def projection(self) -> nn.Parameter:
        return visual_projection(self.backbone)

    @property
    def bank_rows(self) -> str | None:
        """``pooled`` where the backbone gives its pre-projection output (contract.PooledImageBackbone), else no bank."""
        return "pooled" if isinstance(self.backbone, PooledImageBackbone) else None

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """``normalize(pooled @ W)``: pixels through the tower, or a feature bank's pooled rows ``(N, width)`` projected."""
        if images.dim() == 2:
            return self.backbone.project_image(images)
        return self.backbone.encode_image(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``exp(logit_scale) * normalize(pooled @ W) @ class_text.T`` with the class text computed once (frozen)."""
        image = self.image_features(images)
        text = self._eval_text_features if self._eval_text_features is not None else self.frozen_class_text()
        return self.logit_scale() * image @ text.to(image.dtype).t()

    def regulariser(self) -> torch.Tensor:
        """``||W - W0||^2``, the sum of squares (``MSELoss(reduction="sum")``, ProLIP.py:79, :201)."""
        return (self.projection() - self.initial_projection).pow(2).sum()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        loss_ce = self.classification_loss(self(images), labels)
        loss_reg = self.regulariser()
        loss = loss_ce + self.reg_weight * loss_reg  # ProLIP.py:203-205
        bs = len(labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        if self._diagnostics_step():
            self.log("train/loss_reg", loss_reg.detach(), on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def inference_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        """The trained model as a plain ContrastiveFineTune (a CLIP whose visual projection moved), without W0."""
        hparams = {k: v for k, v in dict(self.hparams).items() if k not in _OWN_ARGS}
        hparams.update(sim_weight=0.0, cls_weight=1.0, freeze_logit_scale=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items() if k != "initial_projection"}
        return "clipft.methods.contrastive_finetune.ContrastiveFineTune", hparams, state
