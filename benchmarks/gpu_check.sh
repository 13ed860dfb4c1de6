#!/usr/bin/env bash
# The GPU check as one prepared script (issue 18): every figure of docs/performance.md's GPU table in
# one call of under 8 minutes on one H100/H200, each printed as a `RESULT | ...` line.
#
#   bash benchmarks/gpu_check.sh             # on the device (torch 2.11, lightning, transformers, timm, peft)
#   bash benchmarks/gpu_check.sh --dry-run   # the same steps, tiny and on CPU (tests/test_gpu_check.py)
#
# The device has no network and lacks hydra-core, omegaconf and antlr4: they are installed (into
# /tmp/clipft-site, nothing else touched) from the wheels in $CLIPFT_WHEELS, default .whl/ in the
# checkout, made here once and carried with the call (the device tool's README, `carry: [".whl"]`):
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps hydra-core==1.3.8 omegaconf==2.3.1 -d .whl
#   pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl      # an sdist on PyPI; pure Python
# clipft itself runs from the checkout (PYTHONPATH), no install.
# Figures also land as JSON under $OUT/gpu_check (the device tool brings $OUT back).
#
#  1. ViT-B/32-shaped FLYP step (bf16-mixed, fused AdamW, SDPA): img/s through the Lightning Trainer
#     (as train.py builds it, and lean) vs the plain loop, their ratio, MFU (train_throughput.py)
#  2. torch.compile on vs off (lean Trainer)
#  3. bf16 vs fp32 loss after 20 steps from the same weights (precision_agreement.py)
#  4. an epoch through train.py with the cache and GPU-side augmentation, as a share of step 1 (e2e_epoch.py)
#  5. peak memory of one CoOp step vs 10 / 100 / 1,000 classes, one pass vs class-chunked prompts (prompt_memory.py)
#  6. methods on a ViT-B/16-shaped CLIP through the real pipeline (clipft.pipeline.train.run_train, 2 epochs of
#     synthetic signs each): FLYP, CoOp without and with the feature bank (callbacks=[default,feature_bank], 2 views;
#     SKIPPED where the checkout has none), the few-shot grid's trained methods (linear probe, CLAP, CoOp, Tip-Adapter-F, LoRA);
#     img/s of the last epoch, image-tower MFU, peak memory, wall time of the run
# GPU_CHECK_SECTIONS=prompt_memory,methods runs only those sections (default: all).
set -uo pipefail

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
RESULTS=${OUT:-$(mktemp -d)}/gpu_check
mkdir -p "$RESULTS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore

if ! $PY -c "import hydra, omegaconf" 2>/dev/null; then
  WHEELS=${CLIPFT_WHEELS:-$ROOT/.whl}
  echo "installing hydra-core / omegaconf / antlr4 from $WHEELS (no network)"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/clipft-site "$WHEELS"/*.whl \
    || { echo "RESULT | setup | FAILED: cannot install the wheels in $WHEELS"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/clipft-site"
fi

$PY - <<'PY'
import torch, lightning, transformers
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"RESULT | versions | torch {torch.__version__} | lightning {lightning.__version__} | transformers {transformers.__version__} | {device}")
PY

if [[ $DRY == 1 ]]; then
  STEP=(--preset tiny --batch-size 8 --classes 10 --block 2 --rounds 1 --warmup 1 --device cpu --precision 32-true)
  AGREE=(--preset tiny --batch-size 8 --steps 20 --device cpu)
  EPOCH=(--preset tiny --batch-size 16 --per-class 6 --dry-run)
  MEMORY=(--classes 4,9 --context-length 8 --layers 1 --chunk-size 4 --repeats 1 --device cpu)
  METHODS=(--preset tiny --per-class 4 --batch-size 8 --epochs 1 --device cpu)
  LIMIT=300; LONG_LIMIT=400
else
  STEP=(--preset vitb32 --batch-size 256 --classes 10 --block 20 --rounds 5 --warmup 1 --precision bf16-mixed)
  AGREE=(--preset vitb32 --batch-size 64 --steps 20)
  EPOCH=(--preset vitb32 --batch-size 256 --per-class 1000 --workers 8)
  MEMORY=(--classes 10,100,1000 --context-length 77 --chunk-size 128 --repeats 3 --device cuda)
  METHODS=(--preset vitb16 --per-class 64 --batch-size 64 --epochs 2 --device cuda)
  LIMIT=170; LONG_LIMIT=420
fi
SECTIONS=${GPU_CHECK_SECTIONS:-all}
wanted() { [[ $SECTIONS == all || ",$SECTIONS," == *",$1,"* ]]; }

section() {  # name, command...: run with a time limit; a failure is reported and the next section still runs
  local name=$1; shift
  timeout "$LIMIT" "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  grep "^RESULT" "$RESULTS/$name.log" || true
  if [[ $rc != 0 ]]; then
    echo "RESULT | $name | FAILED rc=$rc (last lines of $RESULTS/$name.log:)"
    tail -n 15 "$RESULTS/$name.log"
  fi
}

if wanted step; then
section step      $PY benchmarks/train_throughput.py "${STEP[@]}" --variants user,lean --json "$RESULTS/step.json"
fi
if wanted compile; then
section compile   $PY benchmarks/train_throughput.py "${STEP[@]}" --variants lean --compile --json "$RESULTS/step_compile.json"
$PY - "$RESULTS" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    off = json.loads((out / "step.json").read_text())["variants"]["lean"]["framework_img_s"]
    on = json.loads((out / "step_compile.json").read_text())["variants"]["lean"]["framework_img_s"]
    print(f"RESULT | compile | lean Trainer {off:.1f} img/s eager, {on:.1f} img/s compiled: x{on / off:.2f}")
except (OSError, KeyError, ValueError) as exc:
    print(f"RESULT | compile | not compared ({exc})")
PY
fi
wanted precision && section precision $PY benchmarks/precision_agreement.py "${AGREE[@]}" --json "$RESULTS/precision.json"
wanted epoch && section epoch     $PY benchmarks/e2e_epoch.py "${EPOCH[@]}" --step-json "$RESULTS/step.json" --json "$RESULTS/epoch.json"
wanted prompt_memory && LIMIT=$LONG_LIMIT section prompt_memory $PY benchmarks/prompt_memory.py "${MEMORY[@]}" --json "$RESULTS/prompt_memory.json"

# ---------------------------------------------------------------- 6. methods through the pipeline
cat > "$RESULTS/method_steps.py" <<'PY'
"""Each method through clipft.pipeline.train.run_train on synthetic signs: last epoch's img/s, MFU, peak memory."""
import argparse, json, resource, shutil, sys, tempfile, time
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from train_throughput import PEAK_TFLOPS, PRESETS  # noqa: E402

VITB16 = {"projection_dim": 512,
          "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                          "num_attention_heads": 8, "max_position_embeddings": 77},
          "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                            "num_attention_heads": 12, "image_size": 224, "patch_size": 16}}
SHAPES = {**PRESETS, "vitb16": VITB16}
# name -> (model config, extra overrides, image-tower FLOPs per image in forwards: 3 trained, 2 LoRA
# (input gradients through the frozen weights), 1 frozen, 0 served from the feature bank; "coop" turns the default
# bank off: the loop before feature banks, every batch through the image tower)
RUNS = {"flyp": ("clip_flyp", [], 3), "coop": ("clip_coop", ["callbacks.feature_bank=null"], 1),
        "coop_feature_bank": ("clip_coop", ["callbacks=[default,feature_bank]", "callbacks.feature_bank.views=2"], 0),
        "grid_linear_probe": ("clip_linear_probe", [], 1), "grid_clap": ("clip_clap", ["model.epochs=20"], 1),
        "grid_coop": ("clip_coop", [], 1), "grid_tip_adapter_f": ("clip_tip_adapter_f", [], 1),
        "grid_lora": ("clip_lora", [], 2)}


def hydra_value(value):
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def compose(model, extra, args, out):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    overrides = [f"model={model}", "data=synthetic_signs", f"data.train_per_class={args.per_class}", "data.test_per_class=1",
                 "data.val_fraction=0.1", f"data.batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}",
                 "~callbacks.rich_progress_bar", "~callbacks.early_stopping", "plots=false", "model.clip.name_or_path=null",
                 f"model.clip.config={hydra_value(SHAPES[args.preset])}",
                 f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", *extra]
    if any(o.startswith("callbacks=") and "feature_bank" in o for o in extra):
        overrides.append(f"callbacks.feature_bank.directory={out / 'banks'}")
    with initialize_config_dir(config_dir=str(Path("clipft/conf").resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # the run's own config, as @hydra.main hands it over
        cfg.paths.root_dir = cfg.paths.output_dir = str(out)
        cfg.paths.data_dir = str(Path(args.data_dir).resolve())
    return cfg


def image_gflops(shape):
    """Forward GFLOPs of the image tower per image: 2 x params x tokens + attention."""
    from clipft.models.tiny_clip import build_clip_config
    vision = build_clip_config(shape).vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    width, layers = vision.hidden_size, vision.num_hidden_layers
    params = layers * (4 * width * width + 2 * width * vision.intermediate_size)
    return (2 * params * tokens + 4 * layers * tokens**2 * width) / 1e9


def run(name, model, extra, passes, args):
    from clipft.pipeline.train import run_train
    out = Path(tempfile.mkdtemp(prefix=f"clipft-{name}-"))
    try:
        cfg = compose(model, extra, args, out)
    except Exception as exc:  # noqa: BLE001
        if "feature_bank" in " ".join(extra) and "feature_bank" in str(exc):
            print(f"RESULT | methods | {name} | SKIPPED: no feature bank in this checkout ({type(exc).__name__})", flush=True)
            return
        raise
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        metrics = run_train(cfg)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # checkpoints of a ViT-B/16 run: hundreds of MB each
    wall = time.perf_counter() - start
    history = [h for h in metrics.get("history", []) if "train/images_per_s" in h]
    img_s = history[-1]["train/images_per_s"] if history else None
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    mfu = "n/a"
    if cuda and img_s and passes:
        device = torch.cuda.get_device_name(0).lower()
        tflops = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
        if tflops:
            mfu = f"{img_s * image_gflops(SHAPES[args.preset]) * passes / (tflops * 1e3):.1%}"
    speed = f"{img_s:.1f} img/s" if img_s else "no per-epoch img/s (fits outside the Trainer loop)"
    memory = f"peak {peak:.2f} GiB allocated" if cuda else f"max RSS {peak:.2f} GiB (process)"
    print(f"RESULT | methods | {name} | model={model} {' '.join(extra)} | {speed} | image-tower MFU {mfu} | {memory} | "
          f"run {wall:.1f} s", flush=True)
    (Path(args.results) / f"method_{name}.json").write_text(json.dumps(
        {"img_s": img_s, "mfu": mfu, "peak_gib": peak, "wall_s": wall, "model": model, "extra": extra}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="vitb16", choices=sorted(SHAPES))
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--data-dir", default=tempfile.mkdtemp(prefix="clipft-data-"))
    parser.add_argument("--results", default=".")
    args = parser.parse_args()
    import warnings
    warnings.filterwarnings("ignore")
    torch.backends.cuda.matmul.allow_tf32 = True
    failed = 0
    for name in args.runs.split(","):
        model, extra, passes = RUNS[name]
        try:
            run(name, model, extra, passes, args)
        except Exception as exc:  # noqa: BLE001 - one method's failure is reported, the next still runs
            failed += 1
            print(f"RESULT | methods | {name} | FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    shutil.rmtree(args.data_dir, ignore_errors=True)
    sys.exit(1 if failed else 0)


main()
PY
wanted methods && LIMIT=$LONG_LIMIT section methods $PY "$RESULTS/method_steps.py" "${METHODS[@]}" --results "$RESULTS"
echo "figures in $RESULTS"
