"""Countdown generator: determinism, ranges, and reachability checked by an independent
brute-force solver (exact Fractions, all orders, all operators, negatives allowed)."""

import ast
import functools
from collections import Counter
from fractions import Fraction

import pytest

from r1jax.data.countdown import CountdownSpec, generate_countdown, problem_key


@functools.cache
def reachable(values: tuple) -> frozenset:
    """All values an expression using every element of `values` exactly once can take."""
    if len(values) == 1:
        return frozenset(values)
    out = set()
    n = len(values)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            rest = tuple(sorted(v for k, v in enumerate(values) if k not in (i, j)))
            a, b = values[i], values[j]
            results = {a + b, a - b, a * b} | ({a / b} if b != 0 else set())
            for r in results:
                out |= reachable(tuple(sorted(rest + (r,))))
    return frozenset(out)


def evaluate(expr: str) -> tuple[Fraction, list[int]]:
    """Evaluates + - * / and parentheses exactly; returns (value, literals used)."""
    literals = []

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            literals.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            if isinstance(node.op, ast.Div):
                return a / b
            return ops[type(node.op)]
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval").body), literals


def test_same_seed_same_data_and_prefix_stable():
    spec = CountdownSpec(seed=7)
    a = generate_countdown(spec, "train", 40)
    assert a == generate_countdown(CountdownSpec(seed=7), "train", 40)
    assert generate_countdown(spec, "train", 15) == a[:15]  # example i independent of size
    b = generate_countdown(CountdownSpec(seed=8), "train", 40)
    assert [r["numbers"] for r in a] != [r["numbers"] for r in b]
    c = generate_countdown(spec, "test", 40)
    assert [r["numbers"] for r in a] != [r["numbers"] for r in c]


@pytest.mark.parametrize(
    "spec",
    [CountdownSpec(seed=1), CountdownSpec(seed=2, min_numbers=4, max_value=20, max_target=300)],
)
def test_targets_reachable_and_in_range(spec):
    records = generate_countdown(spec, "train", 30)
    counts = Counter(len(r["numbers"]) for r in records)
    assert set(counts) <= set(range(spec.min_numbers, spec.max_numbers + 1))
    for r in records:
        numbers, target = r["numbers"], r["target"]
        assert all(spec.min_value <= n <= spec.max_value for n in numbers)
        assert spec.min_target <= target <= spec.max_target
        assert r["answer"] == str(target) and r["source"] == "countdown"
        assert str(numbers) in r["prompt"] and f"equals {target}." in r["prompt"]
        assert Fraction(target) in reachable(tuple(sorted(Fraction(n) for n in numbers)))
        value, used = evaluate(r["solution"])  # the stored witness
        assert value == target and sorted(used) == sorted(numbers)


def test_exclude_and_validation():
    spec = CountdownSpec(seed=0, min_numbers=3, max_numbers=3, max_value=5, max_target=10)
    test = generate_countdown(spec, "test", 10)
    exclude = {problem_key(r["numbers"], r["target"]) for r in test}
    train = generate_countdown(spec, "train", 60, exclude)
    assert not exclude & {problem_key(r["numbers"], r["target"]) for r in train}
    with pytest.raises(ValueError, match="min_numbers"):
        CountdownSpec(min_numbers=1)
    impossible = CountdownSpec(min_numbers=2, max_numbers=2, max_value=2, min_target=100)
    with pytest.raises(ValueError, match="cannot draw"):  # at most 2 * 2 = 4 is reachable
        generate_countdown(impossible, "x", 1)
