#!/usr/bin/env bash
# Issue 9 on a lent GPU, in one call of about 6 minutes (H100/H200, 16 cores):
#   1. versions and the GPU (nvidia-smi, torch, CUDA, cuDNN);
#   2. the GPU tests of the performance work (device augmentation on CUDA == CPU transform), the
#      trainer's GPU test and its cuDNN autotuning on CUDA, with --gpu so that they fail instead of skipping;
#   3. benchmarks/bench_perf.py at the paper size (32x224x224, batch 16): bf16 / fast paths vs strict
#      fp32 on one batch (the cuDNN bf16 conv3d guard), then the table: eager fp32, each optimisation,
#      end to end from JPEG folders (workers transform vs device augmentation), HPT, feature
#      extraction, torch.compile last; rows past the time budget are skipped, not lost.
# Everything printed is also written under $OUT (default benchmarks/results): gpu_bench.log and
# perf_gpu.json. Commit those numbers (and paste the table into the README) from the GPU session.
#
# Usage (repository root):  bash benchmarks/gpu_bench.sh          # PYTHON=python3 OUT=... BUDGET_S=300 LIMIT_S=570
# LIMIT_S bounds the whole script (a device call may last 10 minutes): the benchmark gets what the
# steps before it left.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
BUDGET_S=${BUDGET_S:-300}
LIMIT_S=${LIMIT_S:-570}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PECOP_HEADLESS=1
export PECOP_CACHE_DIR=${PECOP_CACHE_DIR:-/tmp/pecop-cache}
exec > >(tee "$OUT/gpu_bench.log") 2>&1

echo "== 1. machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
"$PYTHON" -c "import torch, torchvision; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', \
torch.backends.cudnn.version(), 'torchvision', torchvision.__version__, 'GPU', torch.cuda.get_device_name(0))"
nproc

echo "== 2. GPU tests"
timeout 240 "$PYTHON" -m pytest --gpu -m gpu -q -p no:cacheprovider tests/test_perf_gpu_augment.py tests/test_perf_fast_path.py \
    tests/test_train_loop.py tests/test_train_autotune.py || echo "GPU TESTS FAILED (status $?)"

echo "== 3. benchmark (time budget ${BUDGET_S} s for the rows)"
timeout $(( LIMIT_S - SECONDS > 60 ? LIMIT_S - SECONDS : 60 )) "$PYTHON" benchmarks/bench_perf.py --out "$OUT/perf_gpu.json" --budget-s "$BUDGET_S" --rows \
    eager bf16+cl+fused e2e-device e2e-workers bf16 bf16+cl channels_last fused "hpt bf16+cl" "features bf16+cl" \
    bf16+cl+fused+compile
echo "bench_perf exit status $?"
