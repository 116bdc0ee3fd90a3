"""Synthetic cold-start traces for the countdown task (TinyZero style).

A countdown problem gives a few numbers and a target; the answer is an arithmetic expression
over ``+ - * /`` and parentheses that uses every number exactly once. Here a brute-force
solver over exact fractions finds a solution, and :func:`countdown_trace` turns it into a
short R1-format completion whose reasoning lists the intermediate results::

    <think>3*7=21 21-9=12</think> <answer>3*7-9</answer>

With probability ``reflect_prob`` the trace starts with a wrong attempt, then ``wait`` and the
right one (the reflection pattern R1 users look for). Every character that
:func:`countdown_prompt` and :func:`countdown_trace` can produce is in
:data:`COUNTDOWN_CHARS`, so ``CharTokenizer(COUNTDOWN_CHARS)`` covers prompts and completions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

MAX_NUMBERS = 5  # memoised brute force: 5 numbers without a solution take ~0.4 s

_WORDS = ("Using", "make", "wait", "<think>", "</think>", "<answer>", "</answer>")
COUNTDOWN_CHARS = "".join(sorted(set("".join(_WORDS) + "0123456789+-*/()= ")))
"""All characters of countdown prompts and traces (digits, operators, parentheses, ``=``,
space, and the letters of the tags and of the words ``Using``, ``make``, ``wait``)."""

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class _Node(NamedTuple):
    """A (sub)expression: exact value, text, top-level operator ('' for a number), steps."""

    value: Fraction
    text: str
    op: str
    steps: tuple[str, ...]


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _wrap(node: _Node, parent: str, right: bool) -> str:
    """``node.text`` with the parentheses it needs as an operand of ``parent``."""
    if not node.op:
        return node.text
    p, q = _PRECEDENCE[node.op], _PRECEDENCE[parent]
    needs = p < q or (right and p == q and parent in "-/")
    return f"({node.text})" if needs else node.text


def _combine(a: _Node, b: _Node, op: str) -> _Node | None:
    """``a op b`` as a node, or None on division by zero."""
    if op == "/" and b.value == 0:
        return None
    value = {
        "+": lambda: a.value + b.value,
        "-": lambda: a.value - b.value,
        "*": lambda: a.value * b.value,
        "/": lambda: a.value / b.value,
    }[op]()
    text = f"{_wrap(a, op, False)}{op}{_wrap(b, op, True)}"
    step = f"{_fmt(a.value)}{op}{_fmt(b.value)}={_fmt(value)}"
    return _Node(value, text, op, a.steps + b.steps + (step,))


def _children(pool: tuple[_Node, ...], simple: bool) -> Iterable[tuple[_Node, ...]]:
    """Pools with one pair of entries replaced by one of their combinations.

    ``simple`` keeps only non-negative integer results (readable countdown arithmetic).
    """
    for i in range(len(pool)):
        for j in range(i + 1, len(pool)):
            rest = pool[:i] + pool[i + 1 : j] + pool[j + 1 :]
            a, b = pool[i], pool[j]
            for x, y, op in (
                (a, b, "+"),
                (a, b, "*"),
                (a, b, "-"),
                (b, a, "-"),
                (a, b, "/"),
                (b, a, "/"),
            ):
                node = _combine(x, y, op)
                if node is None:
                    continue
                if simple and (node.value < 0 or node.value.denominator != 1):
                    continue
                yield rest + (node,)


def _search(
    pool: tuple[_Node, ...], target: Fraction, simple: bool, failed: set[tuple[Fraction, ...]]
) -> _Node | None:
    """Depth-first search over pair merges: every order, operator and parenthesisation.

    ``failed`` memoises multisets of values already known not to reach ``target``.
    """
    if len(pool) == 1:
        return pool[0] if pool[0].value == target else None
    key = tuple(sorted(n.value for n in pool))
    if key in failed:
        return None
    for child in _children(pool, simple):
        found = _search(child, target, simple, failed)
        if found is not None:
            return found
    failed.add(key)
    return None


def _leaves(numbers: Sequence[int]) -> tuple[_Node, ...]:
    if isinstance(numbers, (str, bytes)) or not 1 <= len(numbers) <= MAX_NUMBERS:
        raise ValueError(f"countdown numbers must be a list of 1..{MAX_NUMBERS} ints: {numbers!r}")
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"countdown number {n!r} must be a non-negative int: {numbers!r}")
    return tuple(_Node(Fraction(int(n)), str(int(n)), "", ()) for n in numbers)


def _check_target(target: int) -> Fraction:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(f"countdown target {target!r} must be an int")
    return Fraction(int(target))


def _solve(numbers: Sequence[int], target: int) -> _Node | None:
    """A solution node: first with non-negative integer steps only, then over all fractions."""
    pool, goal = _leaves(numbers), _check_target(target)
    return _search(pool, goal, True, set()) or _search(pool, goal, False, set())


def solve_countdown(numbers: Sequence[int], target: int) -> str | None:
    """An expression using each of ``numbers`` exactly once that equals ``target``, or None.

    Brute force over all orders, operators (``+ - * /``) and parenthesisations with exact
    :class:`fractions.Fraction` arithmetic. Solutions whose intermediate results are all
    non-negative integers are preferred; others (e.g. ``(1+1/3)*3``) are used when no such one
    exists. Deterministic for a given order of ``numbers``. At most :data:`MAX_NUMBERS` numbers.
    """
    node = _solve(numbers, target)
    return None if node is None else node.text


def countdown_prompt(numbers: Sequence[int], target: int) -> str:
    """Compact question text, e.g. ``"Using 3 7 9 make 12"`` (characters of COUNTDOWN_CHARS)."""
    _leaves(numbers)
    _check_target(target)
    return f"Using {' '.join(str(int(n)) for n in numbers)} make {int(target)}"


def _wrong_attempt(
    pool: tuple[_Node, ...], target: Fraction, rng: np.random.Generator
) -> _Node | None:
    """A random full combination of ``pool`` (integer steps) that misses ``target``, or None."""
    for _ in range(8):
        current = pool
        while len(current) > 1:
            options = list(_children(current, simple=True))
            current = options[int(rng.integers(len(options)))]  # "+" always exists
        if current[0].value != target:
            return current[0]
    return None


def countdown_trace(
    numbers: Sequence[int], target: int, rng: np.random.Generator, reflect_prob: float = 0.25
) -> str:
    """An R1-format completion solving the problem, e.g.
    ``"<think>3*7=21 21-9=12</think> <answer>3*7-9</answer>"``.

    The numbers are shuffled with ``rng`` before solving (varied solutions across calls). With
    probability ``reflect_prob`` a wrong attempt comes first: its steps, then ``wait``, then the
    right steps. Raises ``ValueError`` when the problem has no solution.
    """
    trace = _trace(numbers, target, rng, reflect_prob)
    if trace is None:
        raise ValueError(f"countdown problem {list(numbers)} -> {target} has no solution")
    return trace


def _trace(
    numbers: Sequence[int], target: int, rng: np.random.Generator, reflect_prob: float
) -> str | None:
    """:func:`countdown_trace`, or None when there is no solution."""
    if not 0.0 <= reflect_prob <= 1.0:
        raise ValueError(f"reflect_prob={reflect_prob!r} must be in [0, 1]")
    _leaves(numbers)
    order = [numbers[int(i)] for i in rng.permutation(len(numbers))]
    node = _solve(order, target)
    if node is None:
        return None
    steps = list(node.steps)
    if len(numbers) > 1 and rng.random() < reflect_prob:
        wrong = _wrong_attempt(_leaves(order), Fraction(int(target)), rng)
        if wrong is not None:
            steps = [*wrong.steps, "wait", *steps]
    return f"<think>{' '.join(steps)}</think> <answer>{node.text}</answer>"


def _record_prompt(record: Mapping[str, Any]) -> str:
    return countdown_prompt(record["numbers"], record["target"])


def make_countdown_sft_examples(
    records: Iterable[Mapping[str, Any]],
    prompt_fn: Callable[[Mapping[str, Any]], str] | None = None,
    rng: np.random.Generator | None = None,
    reflect_prob: float = 0.25,
) -> list[tuple[str, str]]:
    """``(prompt_text, completion_text)`` pairs for the records that have a solution.

    Records need ``numbers`` (list of ints) and ``target`` (int), as produced by
    :mod:`r1jax.data.countdown`. ``prompt_fn(record)`` makes the prompt text (default: the
    compact :func:`countdown_prompt`; pass e.g. ``format_prompt`` for the R1-Zero template);
    the completion is :func:`countdown_trace`. Unsolvable records are skipped.
    """
    prompt_fn = prompt_fn or _record_prompt
    rng = rng if rng is not None else np.random.default_rng(0)
    out = []
    for i, record in enumerate(records):
        missing = [k for k in ("numbers", "target") if k not in record]
        if missing:
            raise ValueError(f"countdown record {i} has no field(s) {missing}: {dict(record)!r}")
        trace = _trace(record["numbers"], record["target"], rng, reflect_prob)
        if trace is not None:
            out.append((prompt_fn(record), trace))
    return out
