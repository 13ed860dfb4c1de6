"""Lipsum-FT: robust fine-tuning with random text guidance (Nam, Heo and Lee, ICLR 2024).

Fine-tuning a zero-shot CLIP distorts how its image features relate to text, which costs
robustness under distribution shift. Lipsum-FT keeps that relation: on every step it draws
random texts and pulls the fine-tuned model's "energy" (the logits of the batch's images
against those texts) towards the zero-shot model's with a squared error:

    loss = task loss + weight * sum_k (E_ft(x, t_k) - E_zs(x, t_k))^2 / (2 K), averaged over the batch
    E(x, t) = exp(logit_scale_zs) * <image(x), text(t)>   (both L2-normalised)

Reference: github.com/cs-giung/lipsum-ft @ 1331873d21a460e3818b736b45a54b45173ca74d,
``scripts/Lipsum-FT.py``:

- random texts (``:165-175``): K = ``token_k_ways`` = 80 sequences ``[SOT] t_1 .. t_L [EOT]`` of
  L = ``token_length`` = 8 tokens drawn uniformly from every id below CLIP's SOT (49406), i.e. the
  whole vocabulary but the start and end tokens; new texts every step (``:150,166``), from a key
  seeded with the run's seed (``:269``), the same on every device;
- the zero-shot side is the initial image tower (``:178``) and the pretrained text tower
  (``:138-143,173-175``); both energies use the pretrained temperature, not a trained one (``:193-196``);
- the term ``sum((source - target)^2, -1) / (2 K)``, mean over the batch (``:198-201``), added to the
  task loss with ``feat_regularization`` = 1.0 (``:204-205,450-452``).

In clipft it is a switch on the two fine-tuning methods (``lipsum_weight``, 0 = off):
:class:`~clipft.methods.linear_head_finetune.LinearHeadFineTune` (cross-entropy under a zero-shot
head, the reference's setting: ``model=clip_ce_lipsum``) and
:class:`~clipft.methods.contrastive_finetune.ContrastiveFineTune` (FLYP, ``model=clip_flyp_lipsum``).
The zero-shot model is the method's own :meth:`~clipft.methods.clip_method.CLIPMethod.zeroshot_reference`
(WiSE-FT's alpha = 0), built once at the first step, kept out of the state dict and the optimiser.
Where the text tower trains (FLYP), the fine-tuned energy reads the fine-tuned text tower and the
zero-shot energy the pretrained one (the reference freezes the text tower: the two coincide there).
The texts are built through the backbone contract: the tokenizer's own start/end tokens around
ids drawn from the rest of the token table (for CLIP's BPE exactly the reference's range).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clipft.errors import ConfigError

if TYPE_CHECKING:
    from clipft.methods.clip_method import CLIPMethod

TOKEN_LENGTH = 8  # --token_length, Lipsum-FT.py:453-455
TEXT_COUNT = 80  # --token_k_ways, Lipsum-FT.py:456-458


def check_lipsum_arguments(arguments: Mapping[str, Any]) -> None:
    """``lipsum_weight`` >= 0, ``lipsum_tokens`` and ``lipsum_texts`` >= 1, ``lipsum_seed`` an integer."""
    weight = arguments.get("lipsum_weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0):
        raise ConfigError(f"lipsum_weight={weight!r} is not allowed: expected a number >= 0 (0 = Lipsum-FT off, 1.0 = the paper's)")
    for key in ("lipsum_tokens", "lipsum_texts"):
        value = arguments.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key}={value!r} is not allowed: expected an integer >= 1 (the paper: tokens 8, texts 80)")
    seed = arguments.get("lipsum_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"lipsum_seed={seed!r} is not allowed: expected an integer (the run's seed)")


def energy_gap(image: torch.Tensor, image_zs: torch.Tensor, text: torch.Tensor, text_zs: torch.Tensor,
               scale: torch.Tensor) -> torch.Tensor:
    """``mean_b sum_k (s <image_b, text_k> - s <image_zs_b, text_zs_k>)^2 / (2 K)`` (Lipsum-FT.py:192-201)."""
    source = scale * image @ text.to(image.dtype).t()
    target = scale * image_zs.to(image.dtype) @ text_zs.to(image.dtype).t()
    return (source - target).pow(2).sum(dim=-1).div(2 * text.shape[0]).mean()


class TextLayout:
    """Where a backbone's tokenizer puts its special tokens: ``prefix`` + content + ``suffix``, padded.

    Read from one-token texts ("a", "b": the position where they differ is the content) and a longer one,
    which pads "a" (without an attention mask, the padding is the trailing run of the last id).
    """

    def __init__(self, backbone: Any) -> None:
        tokens = backbone.tokenize(["a", "b", "a b a b a b a b"])
        ids, other = tokens["input_ids"][0].cpu(), tokens["input_ids"][1].cpu()
        differ = (ids != other).nonzero().flatten().tolist()
        if len(differ) != 1:
            raise ConfigError(
                f"lipsum_weight > 0: {type(backbone).__name__}'s tokenizer does not give 'a' and 'b' one token each; "
                "Lipsum-FT cannot place its random tokens (use another backbone or lipsum_weight=0)"
            )
        mask = tokens.get("attention_mask")
        self.lead, self.has_mask = differ[0], mask is not None
        self.width = int(backbone.tokenize(["a"])["input_ids"].shape[-1])  # a fixed length (open_clip, SigLIP) or the text's
        if mask is not None:
            valid = int(mask[0].sum())
        else:  # e.g. open_clip (pads with 0 after its end token), SigLIP (pads with its end token)
            valid = int((ids != ids[-1]).nonzero().flatten()[-1]) + 1
        self.prefix, self.suffix = ids[: self.lead], ids[self.lead + 1 : valid]
        self.pad = int(ids[valid]) if len(ids) > valid else 0
        specials = set(self.prefix.tolist()) | set(self.suffix.tolist())
        if not len(self.suffix) and len(ids) > valid:
            specials.add(self.pad)  # the padding is the end token (SigLIP)
        vocab = int(backbone.token_embedding().num_embeddings)
        self.allowed = torch.tensor([i for i in range(vocab) if i not in specials], dtype=torch.long)
        self.max_length = getattr(backbone, "max_text_length", None)

    def random_texts(self, count: int, length: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``count`` texts of ``length`` uniform random non-special tokens (Lipsum-FT.py:166-172), as ``encode_text``'s kwargs."""
        draw = self.allowed[torch.randint(len(self.allowed), (count, length), generator=generator)]
        end = self.lead + length + len(self.suffix)
        if self.max_length is not None and end > int(self.max_length):
            raise ConfigError(f"lipsum_tokens={length} does not fit the text tower's {self.max_length} tokens")
        ids = torch.full((count, max(self.width, end)), self.pad, dtype=torch.long)
        ids[:, : self.lead] = self.prefix
        ids[:, self.lead : self.lead + length] = draw
        ids[:, self.lead + length : end] = self.suffix
        out = {"input_ids": ids}
        if self.has_mask:
            out["attention_mask"] = (torch.arange(ids.shape[1]) < end).long().expand(count, -1).contiguous()
        return out


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random texts of optimiser step ``step``: a function of (seed, step), so a resumed run and every
    DDP rank draw the same texts (the reference replicates one key over its devices, Lipsum-FT.py:269)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class LipsumFT:
    """The regulariser a fine-tuning method holds (a plain object: its zero-shot model is not a submodule)."""

    def __init__(self, weight: float = 0.0, tokens: int = TOKEN_LENGTH, texts: int = TEXT_COUNT, seed: int = 0) -> None:
        check_lipsum_arguments({"lipsum_weight": weight, "lipsum_tokens": tokens, "lipsum_texts": texts, "lipsum_seed": seed})
        self.weight, self.tokens, self.texts, self.seed = float(weight), int(tokens), int(texts), int(seed)
        self._reference: CLIPMethod | None = None
        self._layout: TextLayout | None = None

    def zeroshot_model(self, method: CLIPMethod, device: torch.device) -> CLIPMethod:
        """The method before fine-tuning (WiSE-FT's reference), built once, frozen, on ``device``."""
        if self._reference is None:
            if not getattr(method.backbone, "is_pretrained", True):
                raise ConfigError(
                    "lipsum_weight > 0 holds the model to its zero-shot weights, but the backbone is a random "
                    "initialisation (model.clip.name_or_path=null): fine-tune from a hub id or a folder, or set lipsum_weight=0"
                )
            with torch.random.fork_rng(devices=[]):  # building it must not shift the run's random stream
                self._reference = method.zeroshot_reference().requires_grad_(False)
        if self._reference.device != device:
            self._reference.to(device)
        return self._reference

    def random_texts(self, method: CLIPMethod, step: int) -> dict[str, torch.Tensor]:
        if self._layout is None:
            self._layout = TextLayout(method.backbone)
        tokens = self._layout.random_texts(self.texts, self.tokens, step_generator(self.seed, step))
        return {k: v.to(method.device) for k, v in tokens.items()}

    def loss(self, method: CLIPMethod, images: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``weight x`` the energy gap of this step; ``image``: the fine-tuned model's normalised features of ``images``."""
        reference = self.zeroshot_model(method, image.device)
        tokens = self.random_texts(method, int(method.global_step))
        with torch.no_grad():
            dtype = next(reference.parameters()).dtype
            image_zs = reference.backbone.encode_image(images.to(dtype))
            text_zs = reference.backbone.encode_text(**tokens)
            scale = reference.logit_scale()
        text = text_zs if method.freeze_text_tower else method.backbone.encode_text(**tokens)
        gap = energy_gap(image, image_zs, text, text_zs, scale)
        if method._diagnostics_step():
            method.log("train/loss_lipsum", gap.detach(), on_step=True, on_epoch=False, batch_size=len(images))
        return self.weight * gap

    def __getstate__(self) -> dict[str, Any]:
        """Copies (EMA, pickling) rebuild the zero-shot model when they need it rather than carry it."""
        return {**self.__dict__, "_reference": None}
