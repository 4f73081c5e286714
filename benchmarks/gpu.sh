#!/usr/bin/env bash
# Every GPU check and timing in one run, for a machine with a CUDA GPU and torch installed,
# most needed first:
#   1. the CUDA tests (tests/test_cuda.py: GPU = CPU results, dropout, bf16, clipping, a GPU-trained run);
#   2. benchmarks/train_step.py at h24, eager, float32 and bf16-mixed (the baseline of this machine);
#   3. the same with torch.compile (float32, bf16-mixed), h720 in bf16-mixed, h24 compiled with
#      CUDA graphs (mode reduce-overhead), h720 in float32;
#   4. `stanhop train --config configs/etth1-h24.yaml` on the GPU, whole batches, for the time left.
# The whole run ends within BUDGET_S seconds (default 420, for a 15-minute lease): each part
# has its own limit, cut to what is left, and a part with under 20 s left is skipped.
# Everything printed goes to $OUT/gpu.log (default: gpu-logs/), each benchmark's JSON line to
# $OUT/results.jsonl. ETTh1 comes from $STANHOP_DATA_DIR. Usage: bash benchmarks/gpu.sh [python]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
py=${1:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
log="$out/gpu.log"
deadline=$((SECONDS + ${BUDGET_S:-420}))

section() { echo "=== $* ($(date +%T), $((deadline - SECONDS)) s left)" | tee -a "$log"; }
limit() {  # limit WANTED: WANTED seconds or what is left, 0 when under 20 s are left
  local left=$((deadline - SECONDS))
  ((left < 20)) && echo 0 || echo $((left < $1 ? left : $1))
}
bench() {  # bench NAME WANTED_S ARGS...: one train_step.py run on the GPU
  local name=$1 t
  t=$(limit "$2")
  shift 2
  ((t == 0)) && { section "skipped (no time left): benchmark $name"; return; }
  section "benchmark $name (limit ${t} s): $*"
  timeout "$t" "$py" benchmarks/train_step.py --device cuda "$@" 2>&1 | grep -v -E '^W[0-9]{4} ' | tee -a "$log"
  tail -n 1 "$log" | grep -q '^{' && echo "{\"$name\": $(tail -n 1 "$log")}" >>"$out/results.jsonl"
}

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
"$py" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$log"

section "tests/test_cuda.py (limit $(limit 120) s)"
timeout "$(limit 120)" "$py" -m pytest -p no:cacheprovider -q -rs tests/test_cuda.py 2>&1 | tee -a "$log"

bench h24-fp32 75 --separations entmax,softmax1 --steps 20 --warmup 5
bench h24-bf16 75 --separations entmax,softmax1 --precision bf16-mixed --steps 20 --warmup 5
bench h24-compile-fp32 150 --separations entmax --compile --steps 10 --warmup 3
bench h24-compile-bf16 120 --separations entmax --compile --precision bf16-mixed --steps 10 --warmup 3
bench h720-bf16 30 --config h720 --separations entmax --precision bf16-mixed --steps 10 --warmup 3
bench h24-cudagraphs-fp32 120 --separations entmax --compile-mode reduce-overhead --steps 10 --warmup 3
bench h720-fp32 30 --config h720 --separations entmax --steps 10 --warmup 3

t=$(limit 300)
if ((t > 0)); then
  section "stanhop train, configs/etth1-h24.yaml on the GPU (limit $t s)"
  run=$(mktemp -d)/h24-gpu
  timeout "$t" "$py" cli.py train --config configs/etth1-h24.yaml --accelerator gpu --set train.micro_batch_size=null \
    --out "$run" 2>&1 | tr '\r' '\n' | grep -v -E '^(Epoch|Validation|test|validation|outlier)' | tee -a "$log"
  cp "$run/metrics.json" "$out/h24-gpu-metrics.json" 2>/dev/null
  cp "$run/logs/metrics.csv" "$out/h24-gpu-log.csv" 2>/dev/null
fi
section "done"
