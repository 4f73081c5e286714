#!/usr/bin/env bash
# Every GPU check and timing in one run, for a machine with a CUDA GPU and torch installed:
#   1. the CUDA tests (tests/test_cuda.py: GPU = CPU results, dropout, bf16, a GPU-trained run);
#   2. benchmarks/train_step.py on the GPU at h24 and h720, float32 and bf16-mixed, eager;
#   3. the same at h24 with torch.compile;
#   4. `stanhop train --config configs/etth1-h24.yaml` on the GPU, whole batches, to early stopping.
# Each part has a time limit, so that a slow one leaves the rest their turn. Everything printed
# goes to $OUT/gpu.log (default: gpu-logs/), each benchmark's JSON line to $OUT/results.jsonl.
# ETTh1 comes from $STANHOP_DATA_DIR. Usage: bash benchmarks/gpu.sh [python]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
py=${1:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
log="$out/gpu.log"

section() { echo "=== $* ($(date +%T))" | tee -a "$log"; }
bench() {  # bench NAME LIMIT_S ARGS...: one train_step.py run on the GPU
  local name=$1 limit=$2
  shift 2
  section "benchmark $name: $*"
  timeout "$limit" "$py" benchmarks/train_step.py --device cuda "$@" 2>&1 | tee -a "$log"
  tail -n 1 "$log" | grep -q '^{' && echo "{\"$name\": $(tail -n 1 "$log")}" >>"$out/results.jsonl"
}

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
"$py" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$log"

section "tests/test_cuda.py"
timeout 150 "$py" -m pytest -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee -a "$log"

bench h24-fp32 90 --separations entmax,softmax1,softmax --steps 20 --warmup 5
bench h24-bf16 90 --separations entmax,softmax1,softmax --precision bf16-mixed --steps 20 --warmup 5
bench h720-fp32 60 --config h720 --separations entmax --steps 10 --warmup 3
bench h720-bf16 60 --config h720 --separations entmax --precision bf16-mixed --steps 10 --warmup 3
bench h24-compile-fp32 150 --separations entmax --compile --steps 20 --warmup 5
bench h24-compile-bf16 150 --separations entmax --compile --precision bf16-mixed --steps 20 --warmup 5

section "stanhop train, configs/etth1-h24.yaml on the GPU"
run=$(mktemp -d)/h24-gpu
timeout 150 "$py" cli.py train --config configs/etth1-h24.yaml --accelerator gpu --set train.micro_batch_size=null \
  --out "$run" 2>&1 | tr '\r' '\n' | grep -v -E '^(Epoch|Validation|test|validation|outlier)' | tee -a "$log"
cp "$run/metrics.json" "$out/h24-gpu-metrics.json" 2>/dev/null
cp "$run/logs/metrics.csv" "$out/h24-gpu-log.csv" 2>/dev/null
section "done"
