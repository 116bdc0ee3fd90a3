"""Accelerator checks of the sampler and GRPO issues, in one short run on one chip.

1. Copy bandwidth: a jitted elementwise pass over a ``--copy_gib`` array (bytes read +
   written / time): the memory roofline the sampler is held against.
2. Sampler decode: a ``--preset`` model with random weights in bf16, ``--batch`` prompts of
   ``--prompt_len`` tokens, ``--new_tokens`` generated per row (no EOS). Decode time is
   ``t(N) - t(1)`` (a call generating one token covers prefill + the first token). Bytes per
   decode step = all weights + the whole KV cache (every step attends over all ``P + N``
   slots); the roofline fraction is ``bytes per step / step time / copy bandwidth``.
3. GRPO update: the same preset with bf16 compute and fp32 master weights + AdamW,
   ``--train_prompts`` x G rows of ``--train_prompt_len`` + ``--train_completion_len``
   tokens, shared prompts, ``--grad_accum`` micro-batches. Model FLOPs = 6 x (non-embedding
   params + lm head) per token actually run (each prompt once per group) + attention
   (12 x layers x heads x head_dim x query x key positions, causal half); MFU = model FLOPs /
   time / ``--peak_tflops`` (looked up from the device kind when not given). XLA's own FLOP
   count (incl. rematerialisation) is printed too.

Prepared for the device machine (one H100/H200: the whole run takes a few minutes):

    PYTHONPATH=. python benchmarks/bench_gpu.py --out benchmarks/results/gpu.txt

``--smoke`` runs the same code on a tiny model in seconds (CPU; ``tests/test_bench_gpu.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# bf16 dense peak per chip, TFLOP/s (vendor figures, no sparsity)
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "TPU v5 lite": 197.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
    "TPU v4": 275.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--copy_gib", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--prompt_len", type=int, default=64)
    ap.add_argument("--new_tokens", type=int, default=1024)
    ap.add_argument("--train_prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--train_prompt_len", type=int, default=256)
    ap.add_argument("--train_completion_len", type=int, default=768)
    ap.add_argument("--grad_accum", type=int, default=8)
    ap.add_argument("--remat", default="dots", help="model.remat for the update")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak_tflops", type=float, default=0.0, help="0: from the device kind")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test of this script)")
    ap.add_argument("--out", default="", help="also write the report here")
    args = ap.parse_args(argv)
    if args.smoke:
        for k, v in dict(
            preset="tiny",
            copy_gib=0.01,
            batch=4,
            prompt_len=8,
            new_tokens=8,
            train_prompts=2,
            group=2,
            train_prompt_len=8,
            train_completion_len=8,
            grad_accum=2,
            reps=1,
        ).items():
            setattr(args, k, v)
    return args


def median_time(fn: Callable[[], Any], reps: int) -> float:
    """Median seconds of ``fn()`` (blocked until ready) after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(gib: float, reps: int) -> float:
    """Bytes/s of a jitted ``x * 2`` over ``gib`` GiB of float32 (read + write)."""
    n = int(gib * 2**30) // 4
    x = jnp.ones((n,), jnp.float32)
    double = jax.jit(lambda a: a * 2.0)
    t = median_time(lambda: double(x), max(reps, 5))
    return 2 * n * 4 / t


def tree_bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def sampler_check(args: argparse.Namespace, mesh: Any, copy_bw: float) -> dict[str, float]:
    """Decode tokens/s and the HBM roofline fraction of the sampler (bf16 weights + cache)."""
    from flax import nnx

    from r1jax.model import create_model, get_preset, init_cache
    from r1jax.sampler import Sampler, SamplingParams

    cfg = get_preset(args.preset).replace(dtype="bfloat16", param_dtype="bfloat16")
    p, n, b = args.prompt_len, args.new_tokens, args.batch
    cfg = cfg.replace(max_position_embeddings=max(cfg.max_position_embeddings, p + n))
    model = create_model(cfg, mesh, seed=0)
    state = nnx.state(model)
    sampler = Sampler(
        model, mesh=mesh, max_prompt_len=p, max_new_tokens=n, prompt_buckets=(p,), eos_ids=[]
    )
    prompts = np.random.RandomState(0).randint(1, cfg.vocab_size, (b, p)).tolist()

    def run(tokens: int) -> Any:
        sp = SamplingParams(temperature=1.0, ignore_eos=True, max_new_tokens=tokens, seed=0)
        return sampler.generate(state, prompts, 1, sp).tokens

    t_one = median_time(lambda: run(1), args.reps)
    t_all = median_time(lambda: run(n), args.reps)
    step_s = (t_all - t_one) / (n - 1)
    cache = jax.eval_shape(lambda: init_cache(cfg, b, p + n, jnp.bfloat16))
    step_bytes = tree_bytes(state) + tree_bytes(cache)
    return {
        "decode_tokens_per_s": b * (n - 1) / (t_all - t_one),
        "end_to_end_tokens_per_s": b * n / t_all,
        "decode_step_ms": step_s * 1e3,
        "bytes_per_step_gb": step_bytes / 1e9,
        "achieved_gb_per_s": step_bytes / step_s / 1e9,
        "roofline_fraction": step_bytes / step_s / copy_bw,
    }


def model_flops_per_step(cfg: Any, prompts: int, group: int, p: int, n: int) -> float:
    """Training FLOPs (forward + backward = 3x forward) of one shared-prompt update."""
    d, hd = cfg.hidden_size, cfg.head_dim
    per_layer = d * hd * (cfg.num_heads * 2 + cfg.num_kv_heads * 2) + 3 * d * cfg.intermediate_size
    dense = cfg.num_layers * per_layer + d * cfg.vocab_size  # + lm head (logits)
    tokens = prompts * p + prompts * group * n
    # scores + weighted values: 2 dots of 2*hd FLOPs per (query, key); causal: half the keys
    attn_prompt = prompts * p * p / 2
    attn_completion = prompts * group * n * (p + n / 2)
    attn = cfg.num_layers * cfg.num_heads * 4 * hd * (attn_prompt + attn_completion)
    return 3 * (2 * dense * tokens + attn)


def update_check(args: argparse.Namespace, mesh: Any, peak: float) -> dict[str, float]:
    """Seconds per GRPO update and MFU (bf16 compute, fp32 weights, AdamW)."""
    from flax import nnx

    from r1jax import sharding as shd
    from r1jax.model import create_model, get_preset
    from r1jax.optim import init_opt_state, make_optimizer
    from r1jax.rl.losses import LossConfig
    from r1jax.rl.step import StepConfig, jit_update, make_update_fn

    p, n = args.train_prompt_len, args.train_completion_len
    cfg = get_preset(args.preset).replace(dtype="bfloat16", param_dtype="float32", remat=args.remat)
    cfg = cfg.replace(max_position_embeddings=max(cfg.max_position_embeddings, p + n))
    graphdef, params = nnx.split(create_model(cfg, mesh, seed=0))
    optimizer = make_optimizer(1e-6, total_steps=1000)
    opt_state = init_opt_state(optimizer, params, mesh)
    step_cfg = StepConfig(
        loss=LossConfig("grpo"),
        prompt_len=p,
        grad_accum=args.grad_accum,
        group_size=args.group,
    )
    rows = args.train_prompts * args.group
    rng = np.random.RandomState(0)
    tokens = rng.randint(1, cfg.vocab_size, (rows, p + n)).astype(np.int32)
    tokens[:, :p] = np.repeat(tokens[:: args.group, :p], args.group, axis=0)
    batch = {
        "tokens": tokens,
        "input_mask": np.ones((rows, p + n), bool),
        "loss_mask": np.ones((rows, n), np.float32),
        "advantages": rng.randn(rows).astype(np.float32),
    }
    shardings = {k: shd.batch_sharding(mesh, 1 if k == "advantages" else 2) for k in batch}
    update = jit_update(
        make_update_fn(graphdef, step_cfg, optimizer),
        shd.state_shardings(params, mesh),
        jax.tree.map(lambda x: x.sharding, opt_state),
        shardings,
    )
    batch = {k: jax.device_put(v, shardings[k]) for k, v in batch.items()}
    xla_flops = update.lower(params, opt_state, batch).compile().cost_analysis().get("flops", 0)
    state = {"params": params, "opt": opt_state}

    def step() -> Any:
        state["params"], state["opt"], m = update(state["params"], state["opt"], batch)
        return m

    t = median_time(step, args.reps)
    flops = model_flops_per_step(cfg, args.train_prompts, args.group, p, n)
    return {
        "update_s": t,
        "model_tflops_per_update": flops / 1e12,
        "xla_tflops_per_update": float(xla_flops) / 1e12,
        "model_tflops_per_s": flops / t / 1e12,
        "mfu": flops / t / (peak * 1e12) if peak else float("nan"),
        "train_tokens_per_s": rows * (p + n) / t,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from r1jax import sharding as shd

    device = jax.devices()[0]
    mesh = shd.make_mesh((1, 1, 1), devices=[device])
    peak = args.peak_tflops or next(
        (v for k, v in PEAK_BF16_TFLOPS.items() if k in device.device_kind), 0.0
    )
    report: dict[str, Any] = {
        "device": device.device_kind,
        "platform": device.platform,
        "peak_bf16_tflops": peak,
        "args": vars(args),
    }
    bw = copy_bandwidth(args.copy_gib, args.reps)
    report["copy_gb_per_s"] = bw / 1e9
    print(f"copy bandwidth: {bw / 1e9:.1f} GB/s", flush=True)
    report["sampler"] = sampler_check(args, mesh, bw)
    print("sampler:", json.dumps(report["sampler"]), flush=True)
    report["update"] = update_check(args, mesh, peak)
    print("update:", json.dumps(report["update"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"$ PYTHONPATH=. python benchmarks/bench_gpu.py {' '.join(argv or [])}\n")
            f.write(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
