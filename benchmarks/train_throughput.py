"""Training-step throughput of ContrastiveFineTune through Lightning against a plain PyTorch loop.

Both sides train their own copy of the *same* module (same initial weights, built from the
real config by ``clipft.pipeline.building.build_model``), with the same optimizer and LR
schedule (``module.configure_optimizers``), on the same in-memory batches. The plain loop
re-implements only the loop: it calls the module's encoders and ``contrastive_loss`` /
``classification_loss`` exactly as ``ContrastiveFineTune.training_step`` does (a check at start-up
asserts the two losses are equal), then ``zero_grad / backward / step / scheduler.step``.

The two are interleaved in one process so machine drift cancels: a Lightning callback
pauses the Trainer every ``--block`` steps and runs ``--block`` plain steps; the framework's
time is the wall time between those pauses (data fetch, hooks, logging, progress bar,
optimizer step: everything Lightning does per step). Two Trainer variants are measured:
``user`` (conf/train.yaml's callbacks, CSV logger and progress bar, as ``python train.py``
builds them; the per-epoch callbacks early stopping / best checkpoint are left out because
this run has no validation) and ``lean`` (no logger, callbacks or progress bar).

    nice -n 5 python benchmarks/train_throughput.py --preset tiny --batch-size 64
    nice -n 5 python benchmarks/train_throughput.py --preset vitb32 --batch-size 8 --block 2 --rounds 3
    python benchmarks/train_throughput.py --preset vitb32 --batch-size 256 --precision bf16-mixed   # GPU, MFU

The last line printed (``RESULT | ...``) is the row for docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ViT-B/32 CLIP (openai/clip-vit-base-patch32) sizes; the byte-level tokenizer replaces BPE.
VITB32_CONFIG: dict[str, Any] = {
    "projection_dim": 512,
    "text_config": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
    },
}
PRESETS = {"tiny": {}, "vitb32": VITB32_CONFIG}
# forward GFLOPs per 224 px image of the ViT-B/32 image tower (the figure the MFU target uses)
VITB32_IMAGE_GFLOPS = 8.82
# dense bf16; H200: the ~790 TFLOP/s a bf16 matmul reached on the machine lent here, H100 the datasheet
PEAK_TFLOPS = {"h100": 989.0, "h200": 790.0, "a100": 312.0}
LABELS_CSV = Path("/work/shared/data/traffic_sign_58/labels.csv")


# ----------------------------------------------------------------------------- setup
def class_names(n: int) -> list[str]:
    """The 58 traffic-sign names when available (realistic prompt lengths), else numbered signs."""
    names: list[str] = []
    if LABELS_CSV.is_file():
        with LABELS_CSV.open(encoding="utf-8") as fh:
            names = [row["Name"].strip() for row in csv.DictReader(fh)]
    names = list(dict.fromkeys(names))
    while len(names) < n:
        names.append(f"sign {len(names)}")
    return names[:n]


def compose_config(args: argparse.Namespace, out_dir: str):
    """conf/train.yaml with model=clip_tiny (or the ViT-B/32 shape), as ``python train.py`` composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    overrides = [
        "model=clip_tiny",
        f"trainer.accelerator={args.device}",
        f"trainer.precision={args.precision}",
        "trainer.devices=1",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_model_summary=false",
        "~callbacks.early_stopping",
        "~callbacks.model_checkpoint",
        "logger=csv",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "clipft" / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = out_dir
        cfg.paths.output_dir = out_dir
        cfg.model.clip.config = OmegaConf.create(PRESETS[args.preset])
    return cfg


def in_memory_loader(batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int):
    """A DataLoader yielding ready batches (``batch_size=None``): data already in memory."""

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int):
            return batches[i % len(batches)]

    return torch.utils.data.DataLoader(Batches(), batch_size=None, shuffle=False, num_workers=0)


def make_batches(args, image_size: int, num_classes: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        images = torch.randn(args.batch_size, 3, image_size, image_size, generator=gen)
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, num_classes, (args.batch_size,), generator=gen)
        if device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        batches.append((images, labels))
    return batches


def prepare_module(module, args):
    if args.channels_last:
        module.to(memory_format=torch.channels_last)
    if args.compile:
        module.backbone.image_tower.compile()
        module.backbone.text_tower.compile()
    return module


# ----------------------------------------------------------------------------- plain loop
def autocast_for(precision: str, device: torch.device):
    if precision.startswith("bf16"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return lambda: torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext


class PlainLoop:
    """The hand-written loop: the module's encoders and losses, torch optimizer and scheduler."""

    def __init__(self, module, loader, precision: str, device: torch.device) -> None:
        from clipft.methods.losses import contrastive_loss

        self.contrastive_loss = contrastive_loss
        self.module = module.to(device).train()
        self.device = device
        opt = self.module.configure_optimizers()  # same param groups, optimizer (fused on CUDA) and schedule
        self.optimizer = opt["optimizer"] if isinstance(opt, dict) else opt
        sched = opt.get("lr_scheduler") if isinstance(opt, dict) else None
        self.scheduler = sched["scheduler"] if isinstance(sched, dict) else sched
        self.autocast = autocast_for(precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if precision.startswith("16") else None
        self.loader = loader
        self.batches = iter(loader)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = self.module
        with self.autocast():
            image = m.backbone.encode_image(images)
            text = m.training_text_features()
            scale = m.logit_scale()
            logits = scale * image @ text.t()
            loss_cls = m.classification_loss(logits, labels)
            loss_sim = self.contrastive_loss(image, text[labels], labels, scale, m.contrastive_target)
            return m.sim_weight * loss_sim + m.cls_weight * loss_cls

    def step(self) -> torch.Tensor:
        """One optimizer step; returns the loss, detached (reading it is the caller's sync)."""
        try:
            images, labels = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            images, labels = next(self.batches)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(images, labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- interleaving
def interleaved_callback(plain: PlainLoop, block: int, warmup_blocks: int, rounds: int, device: torch.device):
    import lightning as L

    class Interleave(L.Callback):
        """Every ``block`` Lightning steps: close the framework timer, run ``block`` plain steps, reopen."""

        def __init__(self) -> None:
            self.framework: list[float] = []
            self.plain: list[float] = []
            self.started: float | None = None
            self.blocks = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx % block:
                return
            sync(device)
            now = time.perf_counter()
            if self.started is not None:
                if self.blocks > warmup_blocks:
                    self.framework.append(now - self.started)
            if len(self.plain) < rounds:
                t0 = time.perf_counter()
                for _ in range(block):
                    plain.step()
                sync(device)
                if self.blocks >= warmup_blocks:
                    self.plain.append(time.perf_counter() - t0)
            self.blocks += 1
            self.started = time.perf_counter()

    return Interleave()


def run_variant(variant: str, cfg, base_module, batches, args, device) -> tuple[list[float], list[float]]:
    import lightning as L

    from clipft.pipeline.building import build_callbacks, build_loggers, build_trainer

    framework_module = prepare_module(copy.deepcopy(base_module), args)
    plain_module = prepare_module(copy.deepcopy(base_module), args)
    total_blocks = args.warmup + args.rounds
    steps = total_blocks * args.block + 1
    plain = PlainLoop(plain_module, in_memory_loader(batches, steps), args.precision, device)
    timer = interleaved_callback(plain, args.block, args.warmup, args.rounds, device)
    if variant == "user":
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.trainer.max_steps = steps
            cfg.trainer.max_epochs = 1
        loggers = build_loggers(cfg)
        callbacks = build_callbacks(cfg, has_logger=bool(loggers))
        trainer = build_trainer(cfg, [*callbacks, timer], loggers)
    else:
        trainer = L.Trainer(
            accelerator=args.device,
            devices=1,
            precision=args.precision,
            max_steps=steps,
            max_epochs=1,
            logger=False,
            callbacks=[timer],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
        )
    trainer.fit(framework_module, train_dataloaders=in_memory_loader(batches, steps))
    return timer.framework, timer.plain


def check_same_math(base_module, batches, args, device) -> float:
    """|plain loss - training_step loss| on the first batch with identical weights (must be ~0)."""
    a = copy.deepcopy(base_module).to(device).train()
    b = copy.deepcopy(base_module).to(device).train()
    images, labels = (t.to(device) for t in batches[0])
    plain = PlainLoop(b, [batches[0]], args.precision, device)
    with torch.no_grad():
        ref = a.training_step((images, labels), 0)  # self.log is a no-op outside a Trainer
        mine = plain.loss(images, labels)
    return float((ref.float() - mine.float()).abs())


# ----------------------------------------------------------------------------- FLOPs / MFU
def train_flops_per_step(module, batch_size: int, image_size: int, preset: str) -> float:
    """3 x forward FLOPs of one step: image tower per image, text tower per encoded prompt token."""
    backbone = module.backbone
    vision = backbone.model.config.vision_config
    text_cfg = backbone.model.config.text_config
    if preset == "vitb32" and image_size == 224:
        image_flops = VITB32_IMAGE_GFLOPS * 1e9
    else:
        tokens = (image_size // vision.patch_size) ** 2 + 1
        params = sum(p.numel() for p in backbone.model.vision_model.encoder.parameters())
        image_flops = 2 * params * tokens + 4 * vision.num_hidden_layers * tokens**2 * vision.hidden_size
    prompts = module.prompt_set.training_prompts(module.train_prompt, None)
    length = int(backbone.tokenize(prompts)["input_ids"].shape[1])
    text_params = sum(p.numel() for p in backbone.model.text_model.encoder.parameters())
    per_prompt = 2 * text_params * length + 4 * text_cfg.num_hidden_layers * length**2 * text_cfg.hidden_size
    return 3 * (batch_size * image_flops + len(prompts) * per_prompt)


def peak_flops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="backbone shape (random init)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=58, help="class prompts encoded per step")
    parser.add_argument("--precision", default=None, help="32-true | bf16-mixed | 16-mixed (default: auto)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the image and text towers")
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed blocks per side")
    parser.add_argument("--variants", default="user,lean")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU (default: from the GPU name)")
    parser.add_argument("--json", default=None, help="also write the figures (img/s, ratio, MFU per variant) here")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    import lightning as L

    warnings.filterwarnings("ignore")
    from clipft.pipeline.building import build_model, resolve_precision

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(args.device)
    if args.device == "cuda":
        args.device = "gpu"  # Lightning's name
    args.precision = resolve_precision(args.precision or "auto", "cpu" if device.type == "cpu" else "gpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    L.seed_everything(0, verbose=False)
    out_dir = tempfile.mkdtemp(prefix="clipft-throughput-")
    cfg = compose_config(args, out_dir)
    names = class_names(args.classes)
    base_module = build_model(cfg, names)
    image_size = int(base_module.preprocessing["image_size"])
    batches = make_batches(args, image_size, len(names), device)

    diff = check_same_math(base_module, batches, args, device)
    print(f"same-math check: |training_step loss - plain loss| = {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit("the plain loop does not compute ContrastiveFineTune's loss: fix the benchmark first")

    flops = train_flops_per_step(base_module, args.batch_size, image_size, args.preset)
    peak = peak_flops(args) if device.type == "cuda" else None
    results = {}
    for variant in [v for v in args.variants.split(",") if v]:
        framework, plain = run_variant(variant, copy.deepcopy(cfg), base_module, batches, args, device)
        fw = [args.block * args.batch_size / t for t in framework]
        pl = [args.block * args.batch_size / t for t in plain]
        ratios = [f / p for f, p in zip(fw, pl)]
        results[variant] = (statistics.median(fw), statistics.median(pl), statistics.median(ratios))
        print(
            f"{variant:>5}: framework {statistics.median(fw):8.1f} img/s  plain {statistics.median(pl):8.1f} img/s  "
            f"ratio (median of {len(ratios)} paired blocks) {statistics.median(ratios):.3f}  "
            f"[per block: {', '.join(f'{r:.2f}' for r in ratios)}]"
        )

    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    parts = [
        f"preset={args.preset}",
        f"bs={args.batch_size}",
        f"classes={len(names)}",
        f"precision={args.precision}",
        f"channels_last={args.channels_last}",
        f"compile={args.compile}",
        f"device={device_name}",
        f"torch={torch.__version__}",
        f"GFLOP/step={flops / 1e9:.1f}",
    ]
    for variant, (fw, pl, ratio) in results.items():
        mfu = f" MFU={fw * flops / args.batch_size / peak:.1%}" if peak else ""
        parts.append(f"{variant}: {fw:.1f} vs plain {pl:.1f} img/s ratio={ratio:.3f}{mfu}")
    print("RESULT | train_throughput | " + " | ".join(parts))
    if args.json:
        figures = {v: {"framework_img_s": fw, "plain_img_s": pl, "ratio": ratio,
                       "mfu": fw * flops / args.batch_size / peak if peak else None}
                   for v, (fw, pl, ratio) in results.items()}
        Path(args.json).write_text(json.dumps({"config": parts, "variants": figures}, indent=1))


if __name__ == "__main__":
    main()
