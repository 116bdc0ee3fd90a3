#!/usr/bin/env bash
# Every accelerator check in one command (one H100/H200 with python3, jax[cuda] and flax).
# BENCH_ARGS=--smoke runs it all on tiny sizes (CPU).
# Writes JSON reports and logs to $OUT (the device tool's folder) or benchmarks/results/:
#   gpu.txt         copy bandwidth, sampler roofline, GRPO update MFU (remat dots), kernel tops
#   gpu_remat_none.txt  the update without rematerialisation
#   gpu_cudnn.txt   sampler prefill and update with cuDNN fused attention (model.attention)
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, jax.devices())"
bench() { python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} "$@" 2>&1 | grep -v "^\s*$" | tee -a "$out/gpu.log"; }
bench --profile --remat dots --out "$out/gpu.txt"
bench --sections sampler,update --attention cudnn --profile --out "$out/gpu_cudnn.txt"
bench --sections update --remat none --out "$out/gpu_remat_none.txt"
