"""Reward scoring throughput: worker pool vs serial, and the cost of hanging inputs.

Scores 4,096 synthetic math completions (correct / wrong / boxed / fractions / decimals /
thousands separators / symbolic answers / missing answers) with
``math_accuracy + 0.5 * format_strict``, serially in-process and with the process pool,
then again with 1% of the completions replaced by a sympy-hanging answer
(``\\boxed{9^{9^{9^{9}}}}``) under a 1 s per-call timeout. Prints a table and writes it
to ``benchmarks/results/rewards.txt``.

    python benchmarks/bench_rewards.py [--n 4096] [--workers 1 2] [--timeout 1.0]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from r1jax.rewards import RewardScorer  # noqa: E402

SPECS = [("math_accuracy", 1.0), ("format_strict", 0.5)]
HANG = "<think>hmm</think> <answer>\\boxed{9^{9^{9^{9}}}}</answer>"
WORDS = [
    "so",
    "we",
    "compute",
    "the",
    "sum",
    "then",
    "check",
    "the",
    "result",
    "again",
    "and",
    "simplify",
    "it",
    "carefully",
]


def _case(rng: random.Random) -> tuple[str, str]:
    """(answer text, gold) for one synthetic sample."""
    a, b = rng.randint(1, 999), rng.randint(2, 60)
    kind = rng.random()
    if kind < 0.35:
        return f"\\boxed{{{a}}}", str(a)  # correct integer
    if kind < 0.55:
        return f"\\boxed{{{a + rng.randint(1, 9)}}}", str(a)  # wrong integer
    if kind < 0.65:
        return f"\\boxed{{\\dfrac{{{a}}}{{{b}}}}}", f"\\frac{{{a}}}{{{b}}}"  # \dfrac vs \frac
    if kind < 0.72:
        return f"\\boxed{{{a / 4:g}}}", f"\\frac{{{a}}}{{4}}"  # decimal vs fraction
    if kind < 0.78:
        return f"\\boxed{{{a},{rng.randint(0, 999):03d}}}", str(a * 1000)  # 1,000 vs 1000
    if kind < 0.86:
        return f"\\boxed{{\\frac{{\\sqrt{{{b}}}}}{{2}}}}", f"\\frac{{1}}{{2}}\\sqrt{{{b}}}"
    if kind < 0.92:
        return f"\\boxed{{\\sqrt{{{b}}}}}", f"\\sqrt{{{b + 1}}}"  # wrong, symbolic
    return "I am not sure.", str(a)  # no answer


def make_batch(n: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    """n synthetic math completions of ~60-160 words each, with their rows."""
    rng = random.Random(seed)
    completions, rows = [], []
    for _ in range(n):
        answer, gold = _case(rng)
        think = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 160)))
        if rng.random() < 0.8:
            completions.append(f"<think>{think}</think> <answer>{answer}</answer>")
        else:
            completions.append(f"{think} {answer}")
        rows.append({"answer": gold, "source": "math"})
    return completions, rows


def with_hangs(completions: list[str], fraction: float, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = list(completions)
    for i in rng.sample(range(len(out)), int(round(fraction * len(out)))):
        out[i] = HANG
    return out


def timed(scorer: RewardScorer, completions: list[str], rows: list[dict]):
    start = time.perf_counter()
    result = scorer.score(completions, rows)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--hang-fraction", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3, help="clean runs; the fastest is kept")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/rewards.txt"))
    args = parser.parse_args()

    completions, rows = make_batch(args.n)
    hung = with_hangs(completions, args.hang_fraction)
    n_hang = sum(c == HANG for c in hung)
    lines = [
        f"# bench_rewards: {args.n} synthetic math completions, "
        "rewards = math_accuracy + 0.5 * format_strict",
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, per-call timeout {args.timeout} s, "
        f"load average at start {os.getloadavg()[0]:.1f} (other jobs share the cores)",
        "",
        f"{'mode':<10} {'workers':>7} {'startup s':>9} {'clean s':>8} {'samples/s':>10} "
        f"{'speedup':>7} {'1% hang s':>9} {'added s':>8} {'timeouts':>8} {'mean reward':>11}",
    ]
    print("\n".join(lines), flush=True)
    base_rate = None
    for workers in [0, *args.workers]:
        start = time.perf_counter()
        scorer = RewardScorer(SPECS, num_workers=workers, timeout_s=args.timeout)
        scorer.score(completions[:8], rows[:8])  # start workers, import sympy
        startup = time.perf_counter() - start
        clean_s, clean = min(
            (timed(scorer, completions, rows) for _ in range(args.repeats)), key=lambda r: r[0]
        )
        hang_s, hung_result = timed(scorer, hung, rows)
        scorer.close()
        rate = args.n / clean_s
        base_rate = base_rate or rate
        line = (
            f"{'serial' if workers == 0 else 'pool':<10} {workers:>7} {startup:>9.2f} "
            f"{clean_s:>8.2f} {rate:>10.0f} {rate / base_rate:>7.2f} {hang_s:>9.2f} "
            f"{hang_s - clean_s:>8.2f} {hung_result.timeouts['math_accuracy']:>8} "
            f"{clean.total.mean():>11.4f}"
        )
        lines.append(line)
        print(line, flush=True)
    notes = [
        f"# '1% hang': {n_hang} completions replaced by \\boxed{{9^{{9^{{9^{{9}}}}}}}}, which",
        "# sympy evaluates for ever; each costs one timeout of one worker (serial: of the",
        "# main thread's SIGALRM timer). 'added s' = '1% hang s' - 'clean s'.",
        f"# 'clean s' is the fastest of {args.repeats} runs; the hang run is timed once.",
    ]
    lines += ["", *notes]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(notes))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
