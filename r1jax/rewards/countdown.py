"""Countdown (TinyZero): combine the given numbers with + - * / to reach the target.

The expression is parsed with :mod:`ast` and evaluated by a small whitelist
interpreter over exact fractions; ``eval`` is never used.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from r1jax.rewards.extract import answer_block
from r1jax.rewards.registry import register_reward

MAX_EXPR_CHARS = 512  # longer answers are not parsed at all
MAX_NODES = 128  # AST nodes allowed in the expression
MAX_BITS = 256  # bound on numerator/denominator size of every intermediate value

_ALLOWED_CHARS = re.compile(r"[0-9+\-*/().\s]*")
_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class InvalidExpression(ValueError):
    """The answer is not an allowed arithmetic expression (or cannot be evaluated)."""


def _eval_node(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if node.value.bit_length() > MAX_BITS:
            raise InvalidExpression("integer literal too large")
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval_node(node.operand, used)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _eval_node(node.left, used)
        right = _eval_node(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise InvalidExpression("division by zero")
        value = _BINOPS[type(node.op)](left, right)
        if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
            raise InvalidExpression("intermediate value too large")
        return value
    raise InvalidExpression(f"{type(node).__name__} is not allowed")


def evaluate_expression(expr: str) -> tuple[Fraction, list[int]]:
    """Value of ``expr`` and the integer literals it uses (in order of appearance).

    Allowed: decimal int literals, ``+ - * /`` (binary), unary ``-``/``+`` and parentheses.
    Raises :class:`InvalidExpression` for anything else (names, calls, ``**``, floats,
    too long or too deep input, division by zero, huge intermediates).
    """
    if len(expr) > MAX_EXPR_CHARS:
        raise InvalidExpression(f"expression longer than {MAX_EXPR_CHARS} characters")
    if not _ALLOWED_CHARS.fullmatch(expr):
        raise InvalidExpression("only digits, + - * / ( ) and spaces are allowed")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise InvalidExpression(f"not a parsable expression: {e}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise InvalidExpression(f"expression has more than {MAX_NODES} nodes")
    used: list[int] = []
    return _eval_node(tree.body, used), used


def _validate_row(row: dict[str, Any]) -> tuple[list[int], int]:
    numbers, target = row.get("numbers"), row.get("target")
    if not isinstance(numbers, list | tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in numbers
    ):
        raise ValueError(f"countdown row 'numbers' must be a list of ints, got {numbers!r}")
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"countdown row 'target' must be an int, got {target!r}")
    return list(numbers), target


@register_reward("countdown", value_range=(0.0, 1.0))
def countdown(
    completion: str, row: dict[str, Any], format_score: float = 0.1, score: float = 1.0
) -> float:
    """TinyZero's countdown score for ``row["numbers"]`` and ``row["target"]``.

    The equation is the content of the last ``<answer>`` block. ``score`` (1.0) when it
    uses every given number exactly once (multiset equality) and evaluates to the target
    (``|value - target| < 1e-5``); ``format_score`` (0.1) when an answer block exists but
    the equation is invalid, uses the wrong numbers or misses the target; 0.0 when there is
    no answer block. Range [0, 1] with the defaults.
    """
    numbers, target = _validate_row(row)
    equation = answer_block(completion)
    if equation is None:
        return 0.0
    try:
        value, used = evaluate_expression(equation)
    except InvalidExpression:
        return format_score
    if Counter(used) != Counter(numbers):
        return format_score
    return score if abs(value - target) < Fraction(1, 100000) else format_score
