"""Accelerator checks of the sampler and GRPO issues, in one short run on one chip.

1. Copy bandwidth: a jitted elementwise pass over a ``--copy_gib`` array (bytes read +
   written / time): the memory roofline the sampler is held against.
2. Sampler decode: a ``--preset`` model with random weights in bf16, ``--batch`` prompts of
   ``--prompt_len`` tokens, ``--new_tokens`` generated per row (no EOS). Decode time is
   ``t(N) - t(1)`` (a call generating one token covers prefill + the first token). Bytes per
   decode step = all weights + the KV cache slots the step reads, averaged over the steps
   (with ``--decode_segments`` k a step reads the slots up to its segment's last step, not
   all ``P + N``); the roofline fraction is ``bytes per step / step time / copy bandwidth``.
3. GRPO update: the same preset with bf16 compute and fp32 master weights + AdamW,
   ``--train_prompts`` x G rows of ``--train_prompt_len`` + ``--train_completion_len``
   tokens, shared prompts, ``--grad_accum`` micro-batches. Model FLOPs = 6 x non-embedding
   params per token actually run (each prompt once per group) + 6 x lm head per completion
   token + attention (12 x layers x heads x head_dim x query x key positions, causal half);
   MFU = model FLOPs / time / ``--peak_tflops`` (looked up from the device kind when not
   given). XLA's own FLOP count is printed too (on GPUs it leaves out library GEMMs).
   ``--profile`` adds the top kernels of one traced call of each.

Prepared for the device machine (one H100/H200: the whole run takes a few minutes):

    PYTHONPATH=. python benchmarks/bench_gpu.py --out benchmarks/results/gpu.txt

``--smoke`` runs the same code on a tiny model in seconds (CPU; ``tests/test_bench_gpu.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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
    ap.add_argument("--grad_accum", type=int, default=8, help="micro-batches of the update")
    ap.add_argument(
        "--sampler_fuse",
        default="on",
        help="Sampler fuse_projections: on, off, or on,off to time both (the first is the "
        "headline)",
    )
    ap.add_argument("--decode_segments", type=int, default=4, help="Sampler decode_segments")
    ap.add_argument(
        "--remat",
        default="dots,none",
        help="model.remat of the update; a comma list times each (the first is the "
        "headline); an entry remat:K uses K micro-batches instead of --grad_accum",
    )
    ap.add_argument("--attention", default="einsum", help="model.attention (einsum, cudnn, xla)")
    ap.add_argument(
        "--update_mask",
        default="span",
        choices=("span", "dense"),
        help="the update's attention mask with --attention cudnn/xla: span (r1jax's RowSpan: "
        "causal + sequence lengths after per-row shifts) or dense (the same mask as a "
        "[rows, queries, keys] array, no shifts)",
    )
    ap.add_argument(
        "--deadline_s", type=float, default=0.0, help="skip remaining remat variants after this"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak_tflops", type=float, default=0.0, help="0: from the device kind")
    ap.add_argument("--sections", default="copy,sampler,update", help="comma list of checks to run")
    ap.add_argument(
        "--profile", action="store_true", help="also trace one call and list the top kernels"
    )
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
            remat="dots",
        ).items():
            if getattr(args, k) == ap.get_default(k):  # tiny sizes unless given explicitly
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


# summary lines a device plane may carry besides its streams (they repeat the kernels' time)
DERIVED_LINES = ("XLA Modules", "XLA Ops", "Steps", "Framework Ops", "Framework Name Scope")


def kernel_profile(fn: Callable[[], Any], top: int = 25) -> dict[str, Any]:
    """Device time by kernel name for one traced ``fn()`` (after it was run once).

    Returns the call's wall ms, the summed kernel ms of the device planes (``busy_ms``; on a
    CPU the XLA thread-pool events instead), and the ``top`` names as ``[name, ms, count]``.
    A profiler failure is returned as ``{"error": ...}`` so that it never loses the timings.
    """
    try:
        return _trace_kernels(fn, top)
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


def _trace_kernels(fn: Callable[[], Any], top: int) -> dict[str, Any]:
    import glob
    import tempfile

    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with jax.profiler.trace(d):
            jax.block_until_ready(fn())
        wall = time.perf_counter() - t0
        data = ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
    devices = [p for p in data.planes if p.name.startswith("/device:")]
    if devices:  # GPU/TPU: the kernel lines of each device plane
        lines = [ln for p in devices for ln in p.lines if ln.name not in DERIVED_LINES]
    else:  # CPU: XLA's thread-pool lines of the host plane
        host = data.find_plane_with_name("/host:CPU")
        lines = [ln for ln in host.lines if ln.name.startswith("tf_XLA")]
    totals: dict[str, list[float]] = {}
    for line in lines:
        for ev in line.events:
            t = totals.setdefault(ev.name, [0.0, 0])
            t[0] += ev.duration_ns / 1e6
            t[1] += 1
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
    return {
        "wall_ms": wall * 1e3,
        "busy_ms": sum(v[0] for v in totals.values()),
        "top": [[name, round(ms, 3), n] for name, (ms, n) in ranked[:top]],
    }


def sampler_check(
    args: argparse.Namespace, mesh: Any, copy_bw: float, fuse: bool = True
) -> dict[str, Any]:
    """Decode tokens/s and the HBM roofline fraction of the sampler (bf16 weights + cache)."""
    from flax import nnx

    from r1jax.model import create_model, get_preset, init_cache
    from r1jax.sampler import Sampler, SamplingParams

    cfg = get_preset(args.preset).replace(
        dtype="bfloat16", param_dtype="bfloat16", attention=args.attention
    )
    p, n, b = args.prompt_len, args.new_tokens, args.batch
    cfg = cfg.replace(max_position_embeddings=max(cfg.max_position_embeddings, p + n))
    model = create_model(cfg, mesh, seed=0)
    state = nnx.state(model)
    sampler = Sampler(
        model,
        mesh=mesh,
        max_prompt_len=p,
        max_new_tokens=n,
        prompt_buckets=(p,),
        eos_ids=[],
        fuse_projections=fuse,
        decode_segments=args.decode_segments,
    )
    prompts = np.random.RandomState(0).randint(1, cfg.vocab_size, (b, p)).tolist()

    def run(tokens: int) -> Any:
        sp = SamplingParams(temperature=1.0, ignore_eos=True, max_new_tokens=tokens, seed=0)
        return sampler.generate(state, prompts, 1, sp).tokens

    t_one = median_time(lambda: run(1), args.reps)
    t_all = median_time(lambda: run(n), args.reps)
    step_s = (t_all - t_one) / (n - 1)
    cache = jax.eval_shape(lambda: init_cache(cfg, b, p + n, jnp.bfloat16))
    slots_read = mean_slots_read(p, n, args.decode_segments)
    step_bytes = tree_bytes(state) + tree_bytes(cache) * slots_read / (p + n)
    out: dict[str, Any] = {}
    if args.profile:  # a 64-token call keeps the trace small (same compiled program)
        out["profile_64_tokens"] = kernel_profile(lambda: run(min(n, 64)))
    return out | {
        "fuse_projections": fuse,
        "decode_segments": args.decode_segments,
        "cache_slots_read_mean": slots_read,
        "decode_tokens_per_s": b * (n - 1) / (t_all - t_one),
        "end_to_end_tokens_per_s": b * n / t_all,
        "decode_step_ms": step_s * 1e3,
        "bytes_per_step_gb": step_bytes / 1e9,
        "achieved_gb_per_s": step_bytes / step_s / 1e9,
        "roofline_fraction": step_bytes / step_s / copy_bw,
    }


def mean_slots_read(p: int, n: int, segments: int) -> float:
    """Cache slots a decode step reads, averaged over steps 1 .. n-1: the step's segment
    attends over ``p + end - 1`` slots (:func:`r1jax.sampling.decode.segment_ends`)."""
    from r1jax.sampling.decode import segment_ends

    ends = segment_ends(n, segments)
    reads = [p + next(e for e in ends if i < e) - 1 for i in range(1, n)]
    return sum(reads) / max(len(reads), 1)


@contextlib.contextmanager
def dense_span_masks() -> Iterator[None]:
    """Inside: the model's library attention gets every :class:`~r1jax.model.RowSpan` as the
    dense ``[B, T, S]`` mask it stands for (the path before r1jax's spans), so that one run
    can time both forms of the same update."""
    from r1jax.model import RowSpan, transformer

    real = transformer.library_attention

    def dense(q, k, v, cache, mask, *rest):  # rest: implementation, scale, window
        if isinstance(mask, RowSpan):
            slots = k.shape[1] if cache is None else cache["v"].shape[2]
            mask = mask.dense(q.shape[1], slots)
        return real(q, k, v, cache, mask, *rest)

    transformer.library_attention = dense
    try:
        yield
    finally:
        transformer.library_attention = real


def update_check(
    args: argparse.Namespace, mesh: Any, peak: float, remat: str, grad_accum: int
) -> dict[str, float]:
    """Seconds per GRPO update and MFU (bf16 compute, fp32 weights, AdamW)."""
    if args.update_mask == "dense":
        with dense_span_masks():
            return _update_check(args, mesh, peak, remat, grad_accum)
    return _update_check(args, mesh, peak, remat, grad_accum)


def _update_check(
    args: argparse.Namespace, mesh: Any, peak: float, remat: str, grad_accum: int
) -> dict[str, float]:
    from flax import nnx

    from r1jax import sharding as shd
    from r1jax.model import create_model, get_preset
    from r1jax.optim import init_opt_state, make_optimizer
    from r1jax.perf import update_flops
    from r1jax.rl.losses import LossConfig
    from r1jax.rl.step import StepConfig, jit_update, make_update_fn

    p, n = args.train_prompt_len, args.train_completion_len
    if args.train_prompts % grad_accum:
        raise ValueError(
            f"--train_prompts={args.train_prompts} does not split into {grad_accum} "
            "micro-batches of whole groups"
        )
    cfg = get_preset(args.preset).replace(
        dtype="bfloat16", param_dtype="float32", remat=remat, attention=args.attention
    )
    cfg = cfg.replace(max_position_embeddings=max(cfg.max_position_embeddings, p + n))
    graphdef, params = nnx.split(create_model(cfg, mesh, seed=0))
    optimizer = make_optimizer(1e-6, total_steps=1000)
    opt_state = init_opt_state(optimizer, params, mesh)
    step_cfg = StepConfig(
        loss=LossConfig("grpo"),
        prompt_len=p,
        grad_accum=grad_accum,
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
    t0 = time.perf_counter()
    compiled = update.lower(params, opt_state, batch).compile()  # timed below: no recompile
    compile_s = time.perf_counter() - t0
    xla_flops = compiled.cost_analysis().get("flops", 0)
    state = {"params": params, "opt": opt_state}

    def step() -> Any:
        state["params"], state["opt"], m = compiled(state["params"], state["opt"], batch)
        return m

    t = median_time(step, args.reps)
    flops = update_flops(cfg, args.train_prompts, args.group, p, n)
    out: dict[str, Any] = {"profile": kernel_profile(step)} if args.profile else {}
    return out | {
        "remat": remat,
        "grad_accum": grad_accum,
        "attention": args.attention,
        "update_mask": args.update_mask,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compile_s": compile_s,
        "update_s": t,
        "model_tflops_per_update": flops / 1e12,
        "xla_tflops_per_update": float(xla_flops) / 1e12,
        "model_tflops_per_s": flops / t / 1e12,
        "mfu": flops / t / (peak * 1e12) if peak else float("nan"),
        "train_tokens_per_s": rows * (p + n) / t,
    }


def write_report(args: argparse.Namespace, argv: list[str] | None, report: dict) -> None:
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"$ PYTHONPATH=. python benchmarks/bench_gpu.py {' '.join(argv or [])}\n")
            f.write(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from r1jax import sharding as shd
    from r1jax.perf import peak_tflops

    device = jax.devices()[0]
    mesh = shd.make_mesh((1, 1, 1), devices=[device])
    peak = args.peak_tflops or peak_tflops(device.device_kind) or 0.0
    report: dict[str, Any] = {
        "device": device.device_kind,
        "platform": device.platform,
        "peak_bf16_tflops": peak,
        "args": vars(args),
    }
    t_start = time.perf_counter()

    def section(name: str, fn: Callable[[], Any]) -> Any:
        """Runs one check; a failure is recorded in the report and the next check still runs."""
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - one device run must report what it can
            report[name] = {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc()
        print(f"{name}:", json.dumps(report[name]), flush=True)
        write_report(args, argv, report)
        return report[name]

    sections = args.sections.split(",")
    bw = float("nan")
    if "copy" in sections:
        bw = section("copy_gb_per_s", lambda: copy_bandwidth(args.copy_gib, args.reps) / 1e9)
        bw = bw * 1e9 if isinstance(bw, float) else float("nan")
    if "sampler" in sections:
        for i, fuse in enumerate(args.sampler_fuse.split(",")):
            name = "sampler" if i == 0 else f"sampler_fuse_{fuse}"
            section(name, lambda f=fuse: sampler_check(args, mesh, bw, f == "on"))
    variants = [(v.split(":") + [str(args.grad_accum)])[:2] for v in args.remat.split(",")]
    for i, (remat, accum) in enumerate(variants if "update" in sections else []):
        if i and args.deadline_s and time.perf_counter() - t_start > args.deadline_s:
            print(f"deadline: remat={remat} grad_accum={accum} skipped", flush=True)
            continue
        section(
            "update" if i == 0 else f"update_remat_{remat}_accum_{accum}",
            lambda r=remat, a=int(accum): update_check(args, mesh, peak, r, a),
        )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
