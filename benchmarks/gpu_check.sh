#!/usr/bin/env bash
# The GPU figures of issue 14 in one call: run from the repository root on a machine with one CUDA GPU.
#
#     OUT=/tmp/gpu bash benchmarks/gpu_check.sh            # gpt2-small, as reported in docs/bench/gpu.md
#     SIZE=tiny DRY=1 PROMPT=16 NEW=16 CONTEXTS=64 OUT=/tmp/gpu bash benchmarks/gpu_check.sh   # the same commands, tiny and quick (CPU)
#
# It needs torch and rich only (no MLflow: runs use --no-track), reads ablate from this checkout, writes
# every table's JSON and a log under $OUT, and gives each step its own time limit so that one slow step
# cannot take the rest with it.
set -uo pipefail
OUT=${OUT:?set OUT to a folder for the numbers}
SIZE=${SIZE:-gpt2-small}
BATCH=${BATCH:-16}
STEPS=${STEPS:-20}
mkdir -p "$OUT"
PROMPT=${PROMPT:-256} NEW=${NEW:-64} CONTEXTS=${CONTEXTS:-256,1024,4096}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
PY=${PY:-python3}
step() { echo; echo "=== $1"; }
limit() { timeout "$@"; local rc=$?; [ $rc = 124 ] && echo "(stopped: over its $1 s)"; return $rc; }
compile=--compile mixers=(--width 768 --heads 12 --batch-tokens 16384)
[ -n "${DRY:-}" ] && compile="" && mixers=(--width 64 --heads 4 --batch-tokens 1024)

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"

step "training step, baseline, bf16 autocast, compiled (the headline figure)"
limit 270 "$PY" - "$SIZE" "$BATCH" "$STEPS" "$OUT" $compile <<'EOF'
# the preset's vocabulary (50,257) and the same model with it padded to a multiple of 64 (50,304), as
# nanoGPT does: the second row says what an aligned head matmul would be worth
import sys
from dataclasses import replace
from ablate.cli import main
from ablate.presets import SIZES
size, batch, steps, out, *compile = sys.argv[1:]
if SIZES[size].vocab_size:
    SIZES[size + "-pad64"] = replace(SIZES[size], vocab_size=-(-SIZES[size].vocab_size // 64) * 64)
padded = [size + "-pad64"] * (size + "-pad64" in SIZES)
for name, b in [(size, int(batch)), *((p, int(batch)) for p in padded), *((p, 2 * int(batch)) for p in padded)]:
    main(["bench", "train", "--size", name, "--variants", "baseline", "--dtype", "bfloat16", *compile,
          "--batch-size", str(b), "--steps", steps, "--warmup", "5", "--out", f"{out}/train-{name}-b{b}-compiled.json"])
EOF

step "training step, bf16 autocast, eager, the issue's variants"
limit 100 "$PY" -m ablate bench train --size "$SIZE" --variants baseline,rope,rmsnorm,swiglu,"gqa(kv_heads=4)",alibi,post \
    --dtype bfloat16 --batch-size "$BATCH" --steps 10 --warmup 3 --out "$OUT/train-$SIZE-eager.json"

step "training step, baseline, tf32 and float32, eager"
limit 45 "$PY" -m ablate bench train --size "$SIZE" --variants baseline --dtype tf32 --batch-size "$BATCH" --steps 10 \
    --warmup 3 --out "$OUT/train-$SIZE-tf32.json" || true  # tf32 is refused on the CPU (a dry run)
limit 45 "$PY" -m ablate bench train --size "$SIZE" --variants baseline --dtype float32 --batch-size "$BATCH" --steps 10 \
    --warmup 3 --out "$OUT/train-$SIZE-fp32.json"

step "decoding: MHA vs GQA vs MQA"
limit 60 "$PY" -m ablate bench decode --size "$SIZE" --variants baseline,"gqa(kv_heads=4)",mqa,lstm,gru --batch 8 \
    --prompt "$PROMPT" --new-tokens "$NEW" --out "$OUT/decode-$SIZE.json"
limit 60 "$PY" -m ablate bench decode --size "$SIZE" --variants baseline,"gqa(kv_heads=4)",mqa,lstm,gru --batch 8 \
    --prompt "$PROMPT" --new-tokens "$NEW" --dtype bfloat16 --out "$OUT/decode-$SIZE-bf16.json"

step "token mixers vs context"
limit 60 "$PY" -m ablate bench mixers --contexts "$CONTEXTS" "${mixers[@]}" \
    --out "$OUT/mixers.png"

step "ablate run on the device (no tracking): MFU in the summary"
"$PY" -c "import random; random.seed(0); open('$OUT/text.txt','w').write(''.join(random.choice('abcdefgh ') for _ in range(400000)))"
limit 75 "$PY" -m ablate run --no-track --size "$SIZE" --data "$OUT/text.txt" --budget 40steps --batch-size "$BATCH" \
    --eval-points 2 --out-dir "$OUT/runs"

step "the same run through torchrun (one process; NCCL on a GPU)"
limit 75 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m ablate run --no-track --size "$SIZE" \
    --data "$OUT/text.txt" --budget 40steps --batch-size "$BATCH" --eval-points 2 --out-dir "$OUT/runs-ddp"
echo; echo "=== done"
