#!/usr/bin/env bash
# Every accelerator check in one command (one H100/H200 with python3, jax[cuda] and flax).
# BENCH_ARGS=--smoke ATTENTION=xla runs it all on tiny sizes (CPU, where cuDNN is absent).
# Writes JSON reports and logs to $OUT (the device tool's folder) or benchmarks/results/:
#   gpu.txt         copy bandwidth; sampler roofline with fused projections (headline) and
#                   without; GRPO update MFU with the fastest measured settings (cuDNN
#                   attention, no remat, 1 micro-batch), then 2 micro-batches; kernel tops
#   gpu_einsum.txt  the update with r1jax's einsum attention, remat dots, 8 micro-batches
#                   (the configuration of the first measurements)
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
  bench --profile --sampler_fuse on,off --attention "${ATTENTION:-cudnn}" --remat none:1,none:2 \
  --out "$out/gpu.txt"
find "$out/xla" -type f ! -name "*after_optimizations.txt" -delete 2>/dev/null
find "$out/xla" -type d -empty -delete 2>/dev/null
gzip -f "$out"/xla/*.txt 2>/dev/null
bench --sections update --attention einsum --remat dots --out "$out/gpu_einsum.txt"
