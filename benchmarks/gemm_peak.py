"""One core's fp32 GEMM throughput, XLA (jitted ``jnp.dot``) vs torch, at the GRPO benchmark's
shapes: the ceiling against which ``bench_grpo.py``'s sample and update times are read.

Rows: M = 32 is one decode step of one device's share of the 64 rollouts (hidden 256,
``gate_up`` 1408, ``down`` 704 -> 256, ``qkv`` 512, ``lm_head`` 1024 with the tied embedding's
``[V, D]`` layout; ``x16 w``: 16 different weights per call, 23 MB, more than the L3 holds, so
they come from memory as a decode step's 13 MB per device do); M = 2048 is one update
micro-batch's tokens. Each framework runs in its own process, pinned to one core
(``taskset``), one thread; the median of repeated calls (about 2 GFLOP each). A jitted call
includes its dispatch (~20-50 us), a small share of the M = 32 times (0.2-1 ms).

    PYTHONPATH=. python benchmarks/gemm_peak.py [--core 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.report import emit  # noqa: E402

# (M, K, N, rhs transposed, number of different right-hand sides per call)
SHAPES = [
    (32, 256, 1408, False, 1),
    (32, 704, 256, False, 1),
    (32, 256, 512, False, 1),
    (32, 256, 1024, True, 1),
    (32, 256, 1408, False, 16),  # 23 MB of weights, > the L3: as in a decode step
    (2048, 256, 1408, False, 1),
    (2048, 704, 256, False, 1),
]


def _label(m: int, k: int, n: int, t: bool, copies: int) -> str:
    return f"{m}x{k}x{n}{'T' if t else ''}{f' x{copies} w' if copies > 1 else ''}"


def measure(framework: str) -> dict[str, float]:
    """GFLOP/s per shape for ``framework`` ("jax" or "torch") in this process."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for m, k, n, transposed, copies in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        bs = [rng.standard_normal((n, k) if transposed else (k, n), dtype=np.float32)]
        bs += [b + 1 for b in bs * (copies - 1)]
        if framework == "torch":
            import torch

            torch.set_num_threads(1)
            x, ys = torch.from_numpy(a), [torch.from_numpy(b) for b in bs]

            def call(x=x, ys=ys, t=transposed):
                return [x @ (y.T if t else y) for y in ys]
        else:
            import jax
            import jax.numpy as jnp

            f = jax.jit(lambda x, ys, t=transposed: [x @ (y.T if t else y) for y in ys])
            x, ys = jnp.asarray(a), [jnp.asarray(b) for b in bs]

            def call(x=x, ys=ys, f=f):
                return jax.block_until_ready(f(x, ys))

        for _ in range(5):
            call()
        flop = 2 * m * k * n * copies
        times = []
        for _ in range(max(9, int(2e9 / flop))):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out[_label(m, k, n, transposed, copies)] = flop / sorted(times)[len(times) // 2] / 1e9
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--core", type=int, default=0, help="the core both runs are pinned to")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per framework")
    ap.add_argument("--out", default="", help="also write the table here")
    ap.add_argument("--child", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu"}
    runs: dict[str, list[dict[str, float]]] = {"jax": [], "torch": []}
    for _ in range(args.rounds):
        for fw in runs:
            cmd = ["taskset", "-c", str(args.core), sys.executable, __file__, "--child", fw]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[fw].append(json.loads(res.stdout.strip().splitlines()[-1]))
    labels = [_label(*s) for s in SHAPES]
    lines = [
        f"fp32 GEMM GFLOP/s on one core (core {args.core}), median per run; "
        f"{args.rounds} alternating runs per framework",
        f"{'M x K x N':<22} " + " ".join(f"{fw:>22}" for fw in runs) + "   xla/torch",
    ]
    for label in labels:
        vals = {fw: [r[label] for r in runs[fw]] for fw in runs}
        med = {fw: statistics.median(v) for fw, v in vals.items()}
        cells = [f"{med[fw]:6.1f} ({min(v):5.1f}-{max(v):5.1f})" for fw, v in vals.items()]
        lines.append(f"{label:<22} " + " ".join(f"{c:>22}" for c in cells)
                     + f"   {med['jax'] / med['torch']:6.2f}")  # fmt: skip
    lines.append(f"$ PYTHONPATH=. python benchmarks/gemm_peak.py {' '.join(argv or sys.argv[1:])}")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
