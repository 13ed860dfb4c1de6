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
  LIMIT=300
else
  STEP=(--preset vitb32 --batch-size 256 --classes 10 --block 20 --rounds 5 --warmup 1 --precision bf16-mixed)
  AGREE=(--preset vitb32 --batch-size 64 --steps 20)
  EPOCH=(--preset vitb32 --batch-size 256 --per-class 1000 --workers 8)
  LIMIT=170
fi

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

section step      $PY benchmarks/train_throughput.py "${STEP[@]}" --variants user,lean --json "$RESULTS/step.json"
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
section precision $PY benchmarks/precision_agreement.py "${AGREE[@]}" --json "$RESULTS/precision.json"
section epoch     $PY benchmarks/e2e_epoch.py "${EPOCH[@]}" --step-json "$RESULTS/step.json" --json "$RESULTS/epoch.json"
echo "figures in $RESULTS"
