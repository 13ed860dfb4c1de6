"""TPT: test-time prompt tuning (Shu et al., "Test-Time Prompt Tuning for Zero-Shot Generalization in
Vision-Language Models", NeurIPS 2022), an evaluation option of the prompt-learning methods.

For each test image, on its own: the image and ``views - 1`` augmented views are encoded; the ``top``
fraction of views whose prediction has the lowest entropy is kept; the learned context takes ``steps``
AdamW steps that minimise the entropy of their averaged prediction; the image is then classified with
the tuned context, and the context (and the optimiser) go back to where they started for the next image.

Reference: github.com/azshue/TPT @ 63ecbace79694205d7884e63fdc3137a200f0b0e, ``tpt_classification.py``:

- views: the preprocessed image plus ``-b 64`` - 1 = 63 augmented ones (``:165-172``, ``data/datautils.py:99-102``);
- augmentation: ``RandomResizedCrop`` then ``RandomHorizontalFlip`` (``data/datautils.py:62-73``), the
  reference's branch for the ImageNet sets (``augmix=len(set_id) > 1`` is False for I/A/V/R/K, ``:171-172``).
  AugMix, which the reference adds on the fine-grained sets (``data/datautils.py:74-84``), is not implemented.
  clipft crops the preprocessed (resized, centre-cropped) test image the loader gives; the reference crops
  the raw image;
- confidence selection: the ``int(views * top)`` views of lowest entropy, chosen on the first step and kept
  for later steps (``:41-44,68-71``; ``--selection_p 0.1``);
- loss: the entropy of the views' mean probability (``:46-51``);
- ``torch.optim.AdamW(ctx, lr)`` with torch's defaults (weight decay 0.01), lr 5e-3, 1 step
  (``:144-146,323-331``), the optimiser's state and the context reset before every image (``:270-276``,
  ``clip/custom_clip.py:147-152``);
- the prediction: the original image against the tuned context (``:284-294``); image features carry no
  gradients (``clip/custom_clip.py:310-320``).

Differences: fp32 here, the reference runs under AMP with a GradScaler (``:62,149``; the scaling cancels in
fp32 arithmetic); the temperature is clipft's ``exp(logit_scale)`` capped at 100 (pretrained CLIPs sit at it).
Models: CoOp and KgCoOp (a learned context, ``ctx``); ``model=clip_coop`` with no checkpoint is zero-shot CLIP
with the context initialised from "a photo of a", the paper's TPT on CLIP. CoCoOp is not supported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from clipft.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TPTSettings:
    """``tpt:`` in eval.yaml; the reference's defaults."""

    views: int = 64
    top: float = 0.1
    steps: int = 1
    lr: float = 5e-3

    @property
    def selected(self) -> int:
        return int(self.views * self.top)  # tpt_classification.py:43


def tpt_settings(cfg: Mapping[str, Any]) -> TPTSettings:
    """Checked ``tpt.*`` values (``enabled`` is the caller's)."""
    known = {"enabled", "views", "top", "steps", "lr"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"tpt has unknown keys {unknown}; allowed: {sorted(known)}")
    defaults = TPTSettings()
    views, top = cfg.get("views", defaults.views), cfg.get("top", defaults.top)
    steps, lr = cfg.get("steps", defaults.steps), cfg.get("lr", defaults.lr)
    if isinstance(views, bool) or not isinstance(views, int) or views < 2:
        raise ConfigError(f"tpt.views={views!r} is not allowed: expected an integer >= 2 (the image and its views; the paper: 64)")
    if isinstance(top, bool) or not isinstance(top, (int, float)) or not 0 < top <= 1 or int(views * top) < 1:
        raise ConfigError(f"tpt.top={top!r} is not allowed: expected a fraction in (0, 1] keeping >= 1 of {views} views (the paper: 0.1)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"tpt.steps={steps!r} is not allowed: expected an integer >= 0 (the paper: 1)")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ConfigError(f"tpt.lr={lr!r} is not allowed: expected a number >= 0 (the paper: 5e-3)")
    return TPTSettings(int(views), float(top), int(steps), float(lr))


def check_tpt_model(model: Any) -> None:
    """A learned, image-independent context: CoOp or KgCoOp (not CoCoOp)."""
    from clipft.methods.cocoop import CoCoOp
    from clipft.methods.coop import CoOp
    from clipft.methods.maple import MaPLe
    from clipft.methods.promptsrc import PromptSRC

    # MaPLe / PromptSRC: CoOp subclasses whose deep prompts also enter the image tower, which TPT would not tune
    if not isinstance(model, CoOp) or isinstance(model, (CoCoOp, MaPLe, PromptSRC)):
        raise ConfigError(
            f"tpt.enabled=true tunes a learned prompt context, which {type(model).__name__} does not have: evaluate a "
            "CoOp/KgCoOp checkpoint, or model=clip_coop without ckpt_path (zero-shot CLIP, context from 'a photo of a')"
        )


def augmented_views(image: torch.Tensor, views: int) -> torch.Tensor:
    """``(views, 3, H, W)``: the image, then random resized crops (scale 0.08-1, ratio 3/4-4/3, bilinear) each
    flipped with probability 1/2 (data/datautils.py:62-73), from the global torch RNG."""
    from torchvision import transforms

    size = list(image.shape[-2:])
    augment = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()])
    return torch.stack([image, *[augment(image) for _ in range(views - 1)]])


def select_confident(logits: torch.Tensor, top: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``int(n * top)`` rows of lowest prediction entropy, and their indices (tpt_classification.py:41-44)."""
    entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
    idx = torch.argsort(entropy, descending=False)[: int(entropy.shape[0] * top)]
    return logits[idx], idx


def average_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the rows' mean probability, in log space (tpt_classification.py:46-51)."""
    log_probs = logits - logits.logsumexp(dim=-1, keepdim=True)
    mean = log_probs.logsumexp(dim=0) - math.log(log_probs.shape[0])
    mean = mean.clamp(min=torch.finfo(mean.dtype).min)
    return -(mean * mean.exp()).sum(dim=-1)


def tune_context(model: Any, features: torch.Tensor, settings: TPTSettings) -> None:
    """``settings.steps`` AdamW steps on ``model.ctx`` (fresh optimiser) against the views' ``features``."""
    optimizer = torch.optim.AdamW([model.ctx], lr=settings.lr)
    selected = None
    for _ in range(settings.steps):
        logits = model.logit_scale() * features @ model.class_text_features().to(features.dtype).t()
        if selected is None:
            logits, selected = select_confident(logits, settings.top)
        else:
            logits = logits[selected]
        loss = average_entropy(logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def tpt_logits(model: Any, views: torch.Tensor, settings: TPTSettings) -> torch.Tensor:
    """``(1, classes)``: the first view (the test image) scored after tuning on all views; the context is reset."""
    start = model.ctx.detach().clone()
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            features = model.backbone.encode_image(views)
        try:
            tune_context(model, features, settings)
            with torch.no_grad():
                return model.logit_scale() * features[:1] @ model.class_text_features().to(features.dtype).t()
        finally:
            with torch.no_grad():
                model.ctx.copy_(start)


def tpt_evaluate(model: Any, loader: Iterable[Any], cfg: Mapping[str, Any], seed: int = 0,
                 device: torch.device | str | None = None) -> dict[str, Any]:
    """TPT accuracy over ``loader``'s ``(images, labels)``, beside the untuned accuracy on the same images."""
    check_tpt_model(model)
    settings = tpt_settings(cfg)
    home = model.ctx.device
    model.to(device or home).eval()
    model.ctx.requires_grad_(True)
    correct = correct_before = total = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # the views of a run are reproducible and leave the run's random stream alone
        with torch.no_grad():
            text = model.class_text_features()
        for batch in loader:
            images, labels = batch[0].to(model.ctx.device), torch.as_tensor(batch[1]).cpu()
            for image, label in zip(images, labels.tolist()):
                views = augmented_views(image, settings.views)
                logits = tpt_logits(model, views, settings)
                with torch.no_grad():
                    before = model.backbone.encode_image(image[None]) @ text.t()
                correct += int(int(logits.argmax(-1)) == label)
                correct_before += int(int(before.argmax(-1)) == label)
                total += 1
    model.to(home)
    if not total:
        raise ConfigError("tpt.enabled=true: the evaluated split has no images")
    log.info("TPT (%d views, top %g, %d step(s), lr %g): accuracy %.4f (untuned %.4f, %d images)",
             settings.views, settings.top, settings.steps, settings.lr, correct / total, correct_before / total, total)
    return {"accuracy": correct / total, "accuracy_untuned": correct_before / total, "num_samples": total,
            "views": settings.views, "top": settings.top, "selected": settings.selected, "steps": settings.steps,
            "lr": settings.lr, "augment": "random_resized_crop+hflip"}
