#!/usr/bin/env bash
# Every accelerator check in one command (one H100/H200 with python3, jax[cuda] and flax).
# BENCH_ARGS=--smoke runs it all on tiny sizes (CPU).
# Writes JSON reports and logs to $OUT (the device tool's folder) or benchmarks/results/:
#   gpu.txt         copy bandwidth; sampler roofline with fused projections (headline) and
#                   without; GRPO update MFU (einsum attention, remat dots); kernel tops
#   gpu_cudnn.txt   the update with cuDNN fused attention (model.attention=cudnn): remat
#                   dots, remat none, remat none with 4 micro-batches
#   xla/            the optimized HLO of the decode program (kernel names -> ops), gzipped
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, jax.devices())"
bench() { python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} "$@" 2>&1 | grep -v "^\s*$" | tee -a "$out/gpu.log"; }
XLA_FLAGS="--xla_dump_to=$out/xla --xla_dump_hlo_as_text --xla_dump_hlo_module_re=jit_decode" \
  bench --profile --remat dots --sampler_fuse on,off --out "$out/gpu.txt"
find "$out/xla" -type f ! -name "*after_optimizations.txt" -delete 2>/dev/null
find "$out/xla" -type d -empty -delete 2>/dev/null
gzip -f "$out"/xla/*.txt 2>/dev/null
bench --sections update --attention cudnn --remat dots,none,none:4 --deadline_s 200 --profile \
  --out "$out/gpu_cudnn.txt"
