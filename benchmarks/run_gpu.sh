#!/usr/bin/env bash
# Every accelerator check in one command (one H100/H200 with python3, jax[cuda] and flax).
# The device image (2026-11-26: jax 0.11.2, flax 0.12.10) needs no carried wheels; a carried
# flax 0.12.8 failed to import against its jax.
# BENCH_ARGS=--smoke ATTENTION=xla runs it all on tiny sizes (CPU, where cuDNN is absent).
# BASELINE=DIR also times the update of the r1jax tree in DIR (e.g. `git archive REV`), in
# the same run, right after the first timing of this tree.
# Ordered by what mattered most (the update's 35% MFU goal, reached on an H200 in run 10 of
# benchmarks/RESULTS.md); each step prints as it ends, so a run cut short keeps what it
# measured. Writes JSON reports and a log to $OUT (the device tool's folder) or
# benchmarks/results/:
#   gpu_attention.txt             cuDNN attention vs einsum (bf16): logits, log-probs, gradients
#   gpu_attention_gemma3.txt      the same on a Gemma 3 shape (sliding windows, query scale)
#   gpu_update.txt                GRPO update MFU: cuDNN attention with RowSpan masks, no
#                                 remat, 1 micro-batch; top kernels
#   gpu_update_dense.txt          the same with dense masks (no per-row shifts)
#   gpu_update_baseline.txt       the update of the BASELINE tree
#   gpu_update_notriton.txt       span masks, XLA's Triton GEMM fusions off (same card)
#   gpu_update_dense_notriton.txt dense masks, Triton GEMM fusions off
#   gpu_sampler.txt               copy bandwidth and the sampler roofline; top kernels
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out" && out=$(cd "$out" && pwd)
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, jax.devices())"
log() { { grep -v "^\s*$" || true; } | tee -a "$out/gpu.log"; }  # (no output is no failure)
bench() { python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} "$@" 2>&1 | log; }
stamp() { echo "== $(date +%T) $*" | log; }
failed=()  # every section runs; the script exits 1 at the end if any failed
fail() { failed+=("$1"); echo "!! $1 failed" | log; }
attention=${ATTENTION:-cudnn}
update=(--sections update --attention "$attention" --remat none:1)
notriton="--xla_gpu_enable_triton_gemm=false${XLA_FLAGS:+ $XLA_FLAGS}"
stamp attention check
python3 benchmarks/check_gpu_attention.py --impl "$attention" --out "$out/gpu_attention.txt" 2>&1 \
  | log || fail "attention check"
python3 benchmarks/check_gpu_attention.py --impl "$attention" --model gemma3 \
  --out "$out/gpu_attention_gemma3.txt" 2>&1 | log || fail "attention check, Gemma 3 windows"
stamp update, span masks
bench "${update[@]}" --profile --out "$out/gpu_update.txt" || fail "update, span masks"
stamp update, dense masks
bench "${update[@]}" --update_mask dense --out "$out/gpu_update_dense.txt" \
  || fail "update, dense masks"
if [ -n "${BASELINE:-}" ]; then
  stamp update, baseline tree "$BASELINE"
  (cd "$BASELINE" && python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} --sections update \
    --attention "$attention" --remat none:1 --out "$out/gpu_update_baseline.txt" 2>&1) | log \
    || fail "update, baseline"
fi
stamp update, span masks, no Triton GEMMs
XLA_FLAGS="$notriton" bench "${update[@]}" --out "$out/gpu_update_notriton.txt" \
  || fail "update, span masks, no Triton"
stamp update, dense masks, no Triton GEMMs
XLA_FLAGS="$notriton" bench "${update[@]}" --update_mask dense \
  --out "$out/gpu_update_dense_notriton.txt" || fail "update, dense masks, no Triton"
stamp sampler
bench --profile --sections copy,sampler --sampler_fuse on --out "$out/gpu_sampler.txt" \
  || fail "sampler"
stamp done
if [ ${#failed[@]} -gt 0 ]; then
  (IFS=";"; echo "failed sections: ${failed[*]}") | log
  exit 1
fi
