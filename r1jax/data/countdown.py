"""Deterministic generator of TinyZero-style countdown problems.

A problem gives 3-4 numbers (configurable) and a target; the model must write an arithmetic
expression over + - * / and parentheses that uses every number exactly once and evaluates to the
target. Targets are reachable by construction: the generator draws how many numbers (uniformly),
then the numbers, then combines them in a random binary tree with random operators, keeping
every intermediate value a positive integer (subtraction only when the result is positive,
division only when exact); draws whose target is out of range are redrawn. The
expression built is kept as the record's `solution` (one witness, not the only answer).

Determinism: example `i` of split `s` is drawn from ``np.random.default_rng([seed, crc32(s), i])``
alone, so the first n examples do not depend on the split size. To keep train and test apart,
training examples whose (sorted numbers, target) occur in `exclude` are redrawn; the builder
passes the test keys.

Record: ``{"id", "prompt", "answer": str(target), "source": "countdown", "solution",
"numbers": list[int], "target": int}``.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections.abc import Set

import numpy as np

PROMPT = (
    "Using the numbers {numbers}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once."
)
_OPS = ("+", "-", "*", "/")
_OP_ORDERS = list(itertools.permutations(_OPS))


@dataclasses.dataclass(frozen=True)
class CountdownSpec:
    """Parameters of a countdown problem set.

    Attributes:
      seed: base seed; the same spec always gives the same problems.
      min_numbers, max_numbers: how many numbers per problem (inclusive range).
      min_value, max_value: range of each number (inclusive).
      min_target, max_target: range of accepted targets (inclusive); others are redrawn.
    """

    seed: int = 0
    min_numbers: int = 3
    max_numbers: int = 4
    min_value: int = 1
    max_value: int = 100
    min_target: int = 1
    max_target: int = 100

    def __post_init__(self) -> None:
        if not 2 <= self.min_numbers <= self.max_numbers:
            raise ValueError(f"need 2 <= min_numbers <= max_numbers, got {self}")
        if not 1 <= self.min_value <= self.max_value:
            raise ValueError(f"need 1 <= min_value <= max_value, got {self}")
        if not 1 <= self.min_target <= self.max_target:
            raise ValueError(f"need 1 <= min_target <= max_target, got {self}")


def _combine(a: int, b: int, op: str) -> int | None:
    """Returns a op b if it is a positive integer, else None."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    return a // b if a % b == 0 else None


def _draw(
    rng: np.random.Generator, k: int, spec: CountdownSpec
) -> tuple[list[int], int, str] | None:
    """Draws k numbers and a random expression over them; None if the target is out of range.

    All randomness of one draw comes from a single `rng.integers` call (speed).
    """
    span = spec.max_value - spec.min_value + 1
    draws = rng.integers(0, 1 << 30, size=k + 3 * (k - 1)).tolist()
    numbers = [spec.min_value + d % span for d in draws[:k]]
    pool = [(n, str(n), True) for n in numbers]  # (value, expression, is_leaf)
    merges = draws[k:]
    while len(pool) > 1:
        n = len(pool)
        r_i, r_j, r_op = merges[:3]
        merges = merges[3:]
        i = r_i % n
        j = (i + 1 + r_j % (n - 1)) % n  # uniform over the other n - 1 entries
        (a, ea, la), (b, eb, lb) = pool[i], pool[j]
        for op in _OP_ORDERS[r_op % len(_OP_ORDERS)]:  # random operator, fallbacks after
            value = _combine(a, b, op)
            if value is not None:
                break
        else:  # unreachable: "+" always succeeds
            raise AssertionError("no operator applies")
        expr = f"{ea if la else f'({ea})'} {op} {eb if lb else f'({eb})'}"
        pool = [p for t, p in enumerate(pool) if t not in (i, j)] + [(value, expr, False)]
    target, expr, _ = pool[0]
    if not spec.min_target <= target <= spec.max_target:
        return None
    return numbers, target, expr


def problem_key(numbers: list[int], target: int) -> tuple[tuple[int, ...], int]:
    """Returns the identity of a problem: (sorted numbers, target)."""
    return tuple(sorted(numbers)), int(target)


def generate_countdown(
    spec: CountdownSpec, split: str, size: int, exclude: Set[tuple] = frozenset()
) -> list[dict]:
    """Generates `size` countdown records for `split` (see module docstring).

    Args:
      spec: the problem-set parameters (seed, ranges).
      split: split name; mixed into every example's seed.
      size: number of records.
      exclude: problem keys (`problem_key`) that must not be produced.

    Returns:
      list of `size` records, example i drawn from rng([seed, crc32(split), i]) only.
    """
    split_id = zlib.crc32(split.encode())
    records = []
    for i in range(size):
        rng = np.random.default_rng([spec.seed, split_id, i])
        k = int(rng.integers(spec.min_numbers, spec.max_numbers + 1))
        for _ in range(10_000):
            drawn = _draw(rng, k, spec)
            if drawn is not None and problem_key(drawn[0], drawn[1]) not in exclude:
                break
        else:
            raise ValueError(f"cannot draw a countdown problem within the target range: {spec}")
        numbers, target, expr = drawn
        records.append(
            {
                "id": f"countdown/{split}/{i}",
                "prompt": PROMPT.format(numbers=numbers, target=target),
                "answer": str(target),
                "source": "countdown",
                "solution": expr,
                "numbers": numbers,
                "target": target,
            }
        )
    return records
