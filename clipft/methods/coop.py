"""CoOp: learned prompt context (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

The class prompt is ``[SOS] [ctx_1 ... ctx_M] [CLASS] [.] [EOS]``, where the M context vectors live in
the text tower's token-embedding space and are the only trained parameters: both towers and
the temperature stay frozen. The logits are ``exp(logit_scale) * normalised image @ normalised class text``.

Parity with the reference implementation, KaiyangZhou/CoOp @ ff61507 (``trainers/coop.py``) on
Dassl.pytorch @ c61a1b5; ``tests/test_parity_coop.py`` transcribes it and compares. The defaults are
the reference's; each clipft variant is a switch:

- ``ctx_init: null``: M = ``n_ctx`` random vectors drawn from N(0, 0.02) (``coop.py:82-91``), one
  (``n_ctx, width``) draw, or with ``class_specific`` (CSC) one (``classes, n_ctx, width``) draw, so
  every class gets its own independent context. (Before, CSC repeated one draw for every class.)
- the random draw comes from the run's seed, as the reference's ``nn.init.normal_`` after
  ``set_random_seed(cfg.SEED)`` (``train.py:130-132``) does. ``init_seed: null`` draws from the global
  torch RNG (seeded by Lightning's ``seed_everything(seed)``, so reproducible per run seed, but it
  depends on what was drawn before the model is built); an integer draws from a private generator
  seeded with it, isolated from everything else; ``clip_coop.yaml`` passes the run's ``seed``. (Before,
  every run drew from a generator seeded with 0: every seed of a sweep started from one context;
  ``init_seed=0`` reproduces that.)
- ``ctx_init: "a photo of a"``: the context starts as the template's own word embeddings (one vector per
  token; before any step the logits equal zero-shot with "a photo of a {}."). As in the reference
  (``coop.py:72-80``), CSC is then ignored: one shared context. ``csc_from_init: true`` is clipft's
  variant (and its behaviour before): with CSC, a per-class copy of the template's context.
- ``class_token_position``: ``end`` ``[ctx][CLASS].``, ``middle`` ``[ctx[:M//2]][CLASS][ctx[M//2:]].``,
  ``front`` ``[CLASS][ctx].`` (``coop.py:118-182``; the class span is the name's own token count,
  ``coop.py:99``: with a byte-level tokenizer the space before the name stays in front of the class).
- schedule ``scheduler: {name: constant_warmup_cosine, warmup_epochs: 1, warmup_lr: 1e-5}``
  (:class:`ConstantWarmupCosineLR`): Dassl's ``ConstantWarmupScheduler`` over ``CosineAnnealingLR(T_max=max_epoch)``
  (``dassl/optim/lr_scheduler.py:10-54,128-141``), stepped once per epoch: epoch 0 at 1e-5, then epoch
  ``e`` at ``lr * (1 + cos(pi (e - 1) / max_epochs)) / 2``. clipft's earlier per-step schedule
  (linear warm-up from 0 over 10 steps, then cosine to 0) stays available as
  ``model.scheduler.name=cosine +model.scheduler.warmup_steps=10``.
- SGD lr 0.002, momentum 0.9, weight decay 5e-4 on every trained parameter (``configs/trainers/CoOp/*.yaml``,
  Dassl ``optimizer.py:83-113``, ``defaults.py:153-156``).

Other differences, by construction: the reference's context length is the number of words of
``ctx_init`` and it assumes one token per word; clipft counts the tokens of the context (the same for
CLIP's BPE, and it also works with WordPiece or byte-level tokenizers). The temperature is
``exp(logit_scale)`` clamped at 100 (CLIP's own cap; pretrained CLIPs sit at it).

Prompts are built through the backbone contract: ``<context> <name>.`` is tokenised once, the
context's token positions found (checked token by token), and
:meth:`~clipft.models.contract.VisionLanguageBackbone.encode_text_embeddings` encodes the
table's embeddings with the learned context written into those positions (HF CLIP, open_clip,
the MiniLM dual encoder; with a byte-level tokenizer every character is a context token).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from clipft.errors import ConfigError
from clipft.methods.chunked_text import DEFAULT_TEXT_CHUNK_SIZE, check_chunk_size, encode_prompts
from clipft.methods.clip_method import CLIPMethod

log = logging.getLogger(__name__)

PLACEHOLDER = "X"  # the reference implementation's placeholder word
CTX_STD = 0.02  # trainers/coop.py:90, trainers/cocoop.py:87
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")  # trainers/coop.py:126-180
WARMUP_COSINE = "constant_warmup_cosine"
WARMUP_COSINE_KEYS = ("name", "warmup_epochs", "warmup_lr", "max_epochs", "interval")


class ConstantWarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Dassl's constant warm-up before a cosine schedule, stepped once per epoch.

    Epochs ``0 .. warmup_epochs - 1`` run every group at ``warmup_lr``; epoch ``e`` after that at
    ``base_lr * (1 + cos(pi (e - warmup_epochs) / max_epochs)) / 2``: the cosine spans ``max_epochs``
    (the whole run, warm-up included), as Dassl's ``CosineAnnealingLR(T_max=MAX_EPOCH)`` wrapped by
    ``ConstantWarmupScheduler`` with ``WARMUP_RECOUNT=True`` (``dassl/optim/lr_scheduler.py:35-54,128-141``).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_epochs: int,
        warmup_epochs: int = 1,
        warmup_lr: float = 1e-5,
        last_epoch: int = -1,
    ) -> None:
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise ConfigError(f"{WARMUP_COSINE}: max_epochs must be an integer >= 1, got {max_epochs!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ConfigError(f"{WARMUP_COSINE}: warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        if isinstance(warmup_lr, bool) or not isinstance(warmup_lr, (int, float)) or warmup_lr < 0:
            raise ConfigError(f"{WARMUP_COSINE}: warmup_lr must be a number >= 0, got {warmup_lr!r}")
        self.max_epochs, self.warmup_epochs, self.warmup_lr = int(max_epochs), int(warmup_epochs), float(warmup_lr)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        epoch = self.last_epoch
        if epoch < self.warmup_epochs:
            return [self.warmup_lr for _ in self.base_lrs]
        factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - self.warmup_epochs) / self.max_epochs))
        return [base * factor for base in self.base_lrs]


def context_generator(init_seed: int | None) -> torch.Generator | None:
    """The generator random contexts (and CoCoOp's meta-net) are drawn from: a private one seeded with
    ``init_seed``, or None (the global torch RNG, seeded per run by ``seed_everything``)."""
    if init_seed is None:
        return None
    if isinstance(init_seed, bool) or not isinstance(init_seed, int):
        raise ConfigError(f"init_seed must be an integer or null, got {init_seed!r}")
    return torch.Generator().manual_seed(int(init_seed))


def warmup_cosine_scheduler(module: Any, optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Lightning's scheduler entry for ``constant_warmup_cosine`` over the run's epochs (``cfg.max_epochs`` or the
    trainer's): CoOp's and TaskRes's per-epoch schedule (both references train on Dassl)."""
    max_epochs = cfg.get("max_epochs")
    if max_epochs is None and module._trainer is not None:
        max_epochs = module.trainer.max_epochs
    if max_epochs is None or int(max_epochs) < 1:
        raise ConfigError(
            f"model.scheduler: {WARMUP_COSINE} spans the run's epochs: set trainer.max_epochs "
            f"(or model.scheduler.max_epochs), got {max_epochs!r}"
        )
    sched = ConstantWarmupCosineLR(
        optimizer,
        max_epochs=int(max_epochs),
        warmup_epochs=int(cfg.get("warmup_epochs", 1)),
        warmup_lr=float(cfg.get("warmup_lr", 1e-5)),
    )
    return {"scheduler": sched, "interval": "epoch"}


class CoOp(CLIPMethod):
    """Learned prompt context over frozen towers.

    Args:
        n_ctx: number of placeholder words when ``ctx_init`` is null (one learned vector per token they make).
        ctx_init: a template's words to start from (one learned vector per token), or null (random, N(0, 0.02)).
        class_specific: one context per class (CoOp's "CSC") instead of one shared context; ignored
            with ``ctx_init`` unless ``csc_from_init`` (as the reference).
        class_token_position: ``end`` | ``middle`` | ``front``: where the class name sits among the context.
        csc_from_init: with ``ctx_init`` and ``class_specific``, per-class copies of the template's
            context (clipft's variant) instead of the reference's one shared context.
        init_seed: seed of the random context draw; null draws from the global torch RNG (the run's seed).
        text_chunk_size: class prompts encoded per checkpointed chunk (:mod:`clipft.methods.chunked_text`), so
            peak memory stays flat in the class count (1,000 classes: 7x less at the text side); above it, one
            more text-tower forward per step. Up to this many classes: the single pass, bit for bit. null: one pass.
        Every other argument: :class:`~clipft.methods.clip_method.CLIPMethod` (the towers are always frozen).
    """

    reads_image_features = True  # frozen image tower, read through image_features(): a feature bank may serve it

    passes_on = ("class_names", "clip", "optimizer", "scheduler", "prompts", "label_smoothing")

    def __init__(
        self,
        *args: Any,
        n_ctx: int = 16,
        ctx_init: str | None = "a photo of a",
        class_specific: bool = False,
        class_token_position: str = "end",
        csc_from_init: bool = False,
        init_seed: int | None = None,
        text_chunk_size: int | None = DEFAULT_TEXT_CHUNK_SIZE,
        **kwargs: Any,
    ) -> None:
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise ConfigError(f"n_ctx must be an integer >= 1, got {n_ctx!r}")
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f"class_token_position must be one of {list(CLASS_TOKEN_POSITIONS)}, got {class_token_position!r}")
        generator = context_generator(init_seed)
        chunk_size = check_chunk_size(text_chunk_size)
        super().__init__(*args, freeze_image_tower=True, freeze_text_tower=True, freeze_logit_scale=True, **kwargs)
        self._check_scheduler_config()
        self.text_chunk_size = chunk_size
        self.bias_decay = True  # weight decay on every trained parameter, as Dassl's build_optimizer
        self._init_generator = generator  # CoCoOp draws its meta-net from it too
        table = self.backbone.token_embedding()
        if ctx_init and class_specific and not csc_from_init:
            log.warning(
                "class_specific is ignored with ctx_init=%r: one shared context, as the reference "
                "(model.csc_from_init=true gives each class a copy of the template's context)", ctx_init,
            )
        self.class_specific = bool(class_specific) and (not ctx_init or bool(csc_from_init))
        self.class_token_position = class_token_position
        context = str(ctx_init).replace("_", " ") if ctx_init else " ".join([PLACEHOLDER] * n_ctx)
        names = [name.replace("_", " ") for name in self.class_names]
        tokens = self.backbone.tokenize([f"{context} {n}." for n in names])
        ids = tokens["input_ids"]
        self.ctx_positions = self._context_positions(context, ids)
        self.n_ctx = len(self.ctx_positions)
        mask = tokens.get("attention_mask")
        self.register_buffer("prompt_mask", mask if mask is not None else torch.ones_like(ids), persistent=False)
        with torch.no_grad():
            self.register_buffer("prompt_embeddings", table(ids).detach().clone(), persistent=False)
            width = self.prompt_embeddings.shape[-1]
            if ctx_init:  # the template's own word embeddings
                ctx = self.prompt_embeddings[0, self.ctx_positions].clone()
                if self.class_specific:
                    ctx = ctx.unsqueeze(0).repeat(self.num_classes, 1, 1)
            else:  # one draw: every class its own context under CSC
                shape = (self.num_classes, self.n_ctx, width) if self.class_specific else (self.n_ctx, width)
                ctx = torch.empty(shape, dtype=self.prompt_embeddings.dtype).normal_(0.0, CTX_STD, generator=generator)
        self.ctx = nn.Parameter(ctx)
        order = self._layout(names, ids)
        # the tokens in the order they are encoded (only their end-of-text position is read)
        self.register_buffer("prompt_ids", ids if order is None else ids.gather(1, order), persistent=False)
        self.register_buffer("prompt_order", order, persistent=False)
        if type(self) is CoOp:
            self._init_generator = None

    # ------------------------------------------------------------------ prompts
    def _length(self, text: str) -> int:
        """Tokens of ``text`` without padding (attention mask, else non-zero ids: open_clip pads with 0)."""
        tokens = self.backbone.tokenize([text])
        mask = tokens.get("attention_mask")
        return int(mask.sum()) if mask is not None else int((tokens["input_ids"] != 0).sum())

    def _specials(self) -> int:
        """Special tokens the tokenizer adds around a text (BOS/EOS, CLS/SEP, SOT/EOT)."""
        return self._length("a") - 1

    def _context_positions(self, context: str, ids: torch.Tensor) -> list[int]:
        """Where the context's tokens sit in every prompt: after the leading special token (BOS / CLS /
        SOT, when the tokenizer adds specials), as many as the context alone has; checked token by token."""
        specials = self._specials()
        lead = 1 if specials >= 1 else 0
        count = self._length(context) - specials
        alone = self.backbone.tokenize([context])["input_ids"][0, lead : lead + count]
        positions = list(range(lead, lead + count))
        if count < 1 or ids.shape[-1] < lead + count or not bool((ids[:, positions] == alone).all()):
            raise ConfigError(
                f"context {context!r} does not tokenise the same inside the class prompts with "
                f"{type(self.backbone).__name__}'s tokenizer; choose another ctx_init (or ctx_init=null)"
            )
        return positions

    def _layout(self, names: list[str], ids: torch.Tensor) -> torch.Tensor | None:
        """``(classes, length)``: for each prompt position, the position of ``<context> <name>.`` it reads
        (the class token moved to the middle or the front); None for ``end`` (the tokenised order)."""
        if self.class_token_position == "end":
            return None
        specials = self._specials()
        first, after = self.ctx_positions[0], self.ctx_positions[-1] + 1
        ctx = list(self.ctx_positions)
        rows = []
        for i, name in enumerate(names):
            span = self._length(name) - specials  # the reference's name_lens (trainers/coop.py:99)
            if after + span > int(self.prompt_mask[i].sum()):
                raise ConfigError(f"class name {name!r} does not fit the text tower's context length after the prompt context")
            cls = list(range(after, after + span))
            if self.class_token_position == "middle":
                half = self.n_ctx // 2
                moved = ctx[:half] + cls + ctx[half:]
            else:
                moved = cls + ctx
            row = list(range(ids.shape[-1]))
            row[first : after + span] = moved
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long)

    def prompt_token_embeddings(self) -> torch.Tensor:
        """``(classes, length, width)``: the fixed prompt embeddings with the context written in."""
        ctx = self.ctx if self.class_specific else self.ctx.unsqueeze(0).expand(self.num_classes, -1, -1)
        embeddings = self.prompt_embeddings.clone()
        embeddings[:, self.ctx_positions] = ctx.to(embeddings.dtype)
        if self.prompt_order is not None:
            embeddings = embeddings.gather(1, self.prompt_order.unsqueeze(-1).expand_as(embeddings))
        return embeddings

    def class_text_features(self) -> torch.Tensor:
        tokens = {"input_ids": self.prompt_ids, "attention_mask": self.prompt_mask}
        return encode_prompts(self.backbone, self.prompt_token_embeddings(), tokens, self.text_chunk_size)

    def set_prompts(self, prompts: dict[str, Any]) -> None:
        raise ConfigError("CoOp learns its prompts: template sets do not apply (score them with model=clip_zeroshot)")

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "ctx")
        if stored is not None and stored.dim() == 3 and self.ctx.dim() == 2:
            # written before CSC followed the reference with ctx_init: per-class copies (csc_from_init=true)
            log.info("per-class contexts in the checkpoint: loading them as csc_from_init=true")
            self.class_specific = True
            self.ctx = nn.Parameter(self.ctx.detach().unsqueeze(0).repeat(self.num_classes, 1, 1))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ steps
    def extra_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return {"head": [("ctx", self.ctx)]}

    # ------------------------------------------------------------------ optimisation
    def _check_scheduler_config(self) -> None:
        cfg = self.scheduler_config or {}
        if cfg.get("name") != WARMUP_COSINE:
            return
        unknown = sorted(set(cfg) - set(WARMUP_COSINE_KEYS))
        if unknown:
            raise ConfigError(f"model.scheduler: {WARMUP_COSINE} takes {list(WARMUP_COSINE_KEYS[1:])}, not {unknown}")
        if cfg.get("interval", "epoch") != "epoch":
            raise ConfigError(f"model.scheduler: {WARMUP_COSINE} steps once per epoch (interval: epoch)")

    def configure_optimizers(self) -> Any:
        """The shared optimizer, with weight decay on every trained parameter (Dassl's ``build_optimizer``
        over the prompt learner's ``parameters()``), and the ``constant_warmup_cosine`` schedule."""
        cfg = self.scheduler_config
        own = cfg is not None and cfg.get("name") == WARMUP_COSINE
        if own:
            self.scheduler_config = None  # the shared builder knows the named per-step schedules only
        try:
            built = super().configure_optimizers()
        finally:
            self.scheduler_config = cfg
        optimizer = built["optimizer"] if isinstance(built, dict) else built
        if self.bias_decay:
            decay = float(self.optimizer_config.get("weight_decay", 0.0))
            for group in optimizer.param_groups:
                if str(group.get("name", "")).endswith("_no_decay"):
                    group["weight_decay"] = decay
        if own:
            return {"optimizer": optimizer, "lr_scheduler": warmup_cosine_scheduler(self, optimizer, cfg)}
        return built
