"""Sampling throughput: r1jax ``Sampler.generate`` vs Hugging Face ``model.generate`` on CPU.

Both run the same random Qwen2 weights (built with ``transformers``, loaded into r1jax from
the saved safetensors), the same prompts (all ``--prompt_len`` tokens, no padding), and
generate exactly ``--new_tokens`` tokens per row (no EOS: HF gets ``min_new_tokens``,
r1jax ``ignore_eos``), sampling at temperature 1 without truncation (the RL rollout
setting) in float32. Timed repetitions of the two alternate, so background load hits both
alike; the median wall time of a full call (prefill + decode + transfer to host) is
reported. r1jax compilation happens in a warm-up call and is reported separately.

    PYTHONPATH=. python benchmarks/bench_sampler.py --threads 2 \\
        --out benchmarks/results/sampler_cpu.txt
    taskset -c 0 env PYTHONPATH=. python benchmarks/bench_sampler.py --threads 1 \\
        --out benchmarks/results/sampler_cpu.txt --append   # one core each

On a machine shared with other jobs, prefer the pinned one-core run: torch's OpenMP threads
slow down a lot when their cores are busy, which flatters r1jax.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as `python benchmarks/bench_sampler.py`
    sys.path.insert(0, ROOT)
from benchmarks.report import emit  # noqa: E402
from benchmarks.tiny_qwen2 import add_model_args, save_random_qwen2  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch_sizes", default="8,64", help="comma-separated batch sizes")
    ap.add_argument("--prompt_len", type=int, default=32)
    ap.add_argument("--new_tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch.set_num_threads; XLA sizes its pool by the CPUs the process may use, so "
        "run under `taskset -c 0` for a 1-core comparison",
    )
    add_model_args(ap)
    ap.add_argument("--out", default="", help="write the results table to this file")
    ap.add_argument("--append", action="store_true", help="append to --out instead")
    return ap.parse_args(argv)


def build_hf(args: argparse.Namespace, path: str):
    """A random Qwen2 with HF's default init, saved to ``path``."""
    positions = max(512, args.prompt_len + args.new_tokens)
    return save_random_qwen2(args, path, max_position_embeddings=positions)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import jax
    import numpy as np
    import torch

    from r1jax.model.hf import load_hf_model
    from r1jax.sampler import Sampler

    torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    n, p = args.new_tokens, args.prompt_len
    with tempfile.TemporaryDirectory() as tmp:
        hf = build_hf(args, tmp)
        model = load_hf_model(tmp)
    sampler = Sampler(model, max_prompt_len=p, max_new_tokens=n, prompt_buckets=(p,))
    rng = np.random.RandomState(0)
    rows = []
    for b in sizes:
        prompts = rng.randint(1, args.vocab, (b, p))
        ids, lists = torch.tensor(prompts), prompts.tolist()
        t0 = time.perf_counter()
        r1jax_generate(sampler, model, lists, n, seed=0)
        compile_s = time.perf_counter() - t0
        hf_generate(hf, ids, n)  # torch warm-up
        runs = {  # key -> (function, arguments before the seed)
            ("hf", n): (hf_generate, (hf, ids, n)),
            ("hf", 1): (hf_generate, (hf, ids, 1)),
            ("r1jax", n): (r1jax_generate, (sampler, model, lists, n)),
            ("r1jax", 1): (r1jax_generate, (sampler, model, lists, 1)),
        }
        times: dict = {k: [] for k in runs}
        for rep in range(args.reps):  # interleaved: background load hits all alike
            for k, (fn, fn_args) in runs.items():
                t0 = time.perf_counter()
                fn(*fn_args, seed=rep + 1)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = Row(b, med[("hf", n)], med[("r1jax", n)], med[("hf", 1)], med[("r1jax", 1)])
        rows.append((row, compile_s))
        print(row.describe(n) + f"  [r1jax first call incl. compile {compile_s:.1f}s]", flush=True)
    import transformers

    cpus = sorted(os.sched_getaffinity(0))
    pin = f"taskset -c {','.join(map(str, cpus))} env " if len(cpus) < os.cpu_count() else ""
    lines = [
        "r1jax Sampler.generate vs transformers model.generate, CPU, float32",
        f"model: random Qwen2 vocab={args.vocab} hidden={args.hidden} layers={args.layers} "
        f"heads={args.heads} kv_heads={args.kv_heads} intermediate={args.intermediate} "
        f"({model.cfg.num_params / 1e6:.2f}M params)",
        f"prompt {p} tokens, {n} new tokens per row (no EOS), temperature 1, no top-k/top-p; "
        f"median of {args.reps} interleaved reps of a full call (prefill + decode + to host)",
        "end-to-end tok/s = B*N / t(N); decode tok/s = B*(N-1) / (t(N) - t(1)), where t(1) "
        "is a call generating 1 token (prefill + first token)",
        f"torch threads={args.threads}, usable cpus={len(cpus)} of "
        f"{os.cpu_count()} ({platform.machine()}), load average at end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        f"jax {jax.__version__}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, python {sys.version.split()[0]}",
        f"command: {pin}PYTHONPATH=. python benchmarks/bench_sampler.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "",
        "batch | e2e tok/s HF | e2e tok/s r1jax | e2e speedup | decode tok/s HF | "
        "decode tok/s r1jax | decode speedup | r1jax compile+1st call s",
    ]
    for row, c in rows:
        e_hf, e_jx, d_hf, d_jx = row.rates(n)
        lines.append(
            f"{row.b:>5} | {e_hf:>12.0f} | {e_jx:>15.0f} | {e_jx / e_hf:>10.2f}x | "
            f"{d_hf:>15.0f} | {d_jx:>18.0f} | {d_jx / d_hf:>13.2f}x | {c:>24.1f}"
        )
    print()
    emit(lines, args.out, args.append)
    return 0


@dataclasses.dataclass
class Row:
    """Median seconds for one batch size: N tokens and 1 token, HF and r1jax."""

    b: int
    hf_n: float
    jx_n: float
    hf_1: float
    jx_1: float

    def rates(self, n: int) -> tuple[float, float, float, float]:
        """(end-to-end HF, end-to-end r1jax, decode HF, decode r1jax) tokens/s."""
        dec = self.b * (n - 1)
        return (
            self.b * n / self.hf_n,
            self.b * n / self.jx_n,
            dec / max(self.hf_n - self.hf_1, 1e-9),
            dec / max(self.jx_n - self.jx_1, 1e-9),
        )

    def describe(self, n: int) -> str:
        e_hf, e_jx, d_hf, d_jx = self.rates(n)
        return (
            f"batch {self.b:>3}: end-to-end HF {e_hf:7.0f} r1jax {e_jx:7.0f} tok/s "
            f"({e_jx / e_hf:.2f}x); decode HF {d_hf:7.0f} r1jax {d_jx:7.0f} tok/s "
            f"({d_jx / d_hf:.2f}x)"
        )


def hf_generate(hf, ids, n: int, seed: int | None = 0, attention_mask=None, pad_token_id: int = 0):
    """``transformers`` sampling (temperature 1, no truncation) of exactly ``n`` tokens per row
    of ``ids [B, P]`` (``attention_mask``: all ones unless given; ``seed=None``: torch's
    random state as it is)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids) if attention_mask is None else attention_mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            pad_token_id=pad_token_id,
        )
    assert out.shape == (ids.shape[0], ids.shape[1] + n), out.shape
    return out


def r1jax_generate(sampler, model, prompts: list[list[int]], n: int, seed: int):
    """r1jax sampling of exactly ``n`` tokens per row (temperature 1, no EOS)."""
    from r1jax.sampler import SamplingParams

    params = SamplingParams(temperature=1.0, ignore_eos=True, max_new_tokens=n, seed=seed)
    out = sampler.generate(model, prompts, 1, params)
    assert out.completion_mask.all() and out.tokens.shape[1] == n
    return out


if __name__ == "__main__":
    sys.exit(main())
