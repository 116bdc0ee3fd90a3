"""Evaluation estimators: unbiased pass@k, majority vote (maj@k / cons@k), greedy accuracy.

Pure host code; :mod:`r1jax.eval_run` runs the sampler and the scorer over held-out prompts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # Product form avoids huge binomials: prod_{i=n-c+1}^{n} (1 - k / i).
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """Most frequent non-empty extracted answer (ties: the first seen), or None."""
    votes = Counter(a for a in answers if a)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a and votes[a] == best)


def summarize(correct: np.ndarray, ks: Sequence[int] = (1,)) -> dict[str, float]:
    """Mean pass@k over questions from a ``[Q, n]`` boolean correctness matrix."""
    correct = np.asarray(correct, bool)
    q, n = correct.shape
    out = {}
    for k in ks:
        if k <= n:
            out[f"pass@{k}"] = float(
                np.mean([pass_at_k(n, int(c), k) for c in correct.sum(axis=1)])
            )
    return out


def _spaceless(text: str | None) -> str | None:
    return None if text is None else ("".join(text.split()) or None)


def _gsm8k_key(completion: str, mode: str = "flexible", **_: Any) -> str | None:
    from r1jax.rewards.gsm8k import extract_gsm8k_answer

    value = extract_gsm8k_answer(completion, mode)
    return None if value is None else str(value)


def _math_key(completion: str, **_: Any) -> str | None:
    from r1jax.rewards.math import extract_math_answer, normalize_math_answer, parse_number

    answer = extract_math_answer(completion)
    if answer is None:
        return None
    text = normalize_math_answer(answer)
    number = parse_number(text)  # 0.5, \frac{1}{2} and 1/2 vote together
    return str(number) if number is not None else (text or None)


def _countdown_key(completion: str, **_: Any) -> str | None:
    from r1jax.rewards.countdown import InvalidExpression, evaluate_expression
    from r1jax.rewards.extract import answer_block

    expr = answer_block(completion)
    try:
        value, used = evaluate_expression(expr or "")
    except InvalidExpression:
        return _spaceless(expr)
    return f"{value} from {' '.join(map(str, sorted(used)))}"  # 3*7-9 and 7*3-9 vote together


def _default_key(completion: str, **_: Any) -> str | None:
    from r1jax.rewards.extract import answer_block, last_boxed

    return _spaceless(answer_block(completion)) or _spaceless(last_boxed(completion))


VOTE_KEYS: dict[str, Callable[..., str | None]] = {
    "gsm8k_accuracy": _gsm8k_key,
    "math_accuracy": _math_key,
    "countdown": _countdown_key,
}
"""Answer extraction for majority votes, by accuracy reward name. Other rewards vote on the
last ``<answer>`` block (else the last ``\\boxed{}``), spaces removed."""


def vote_key(reward_name: str, **reward_kwargs: Any) -> Callable[[str], str | None]:
    """completion -> the answer it votes for (None: no answer), extracted the way the accuracy
    reward ``reward_name`` (called with ``reward_kwargs``) reads it: a number for GSM8K
    (``"72"`` for ``$72.00``), for math an exact number when the answer is one (``"1/2"`` for
    ``0.5`` or ``\\frac12``) and the normalised LaTeX otherwise, for countdown the value and
    the numbers the expression uses (``"12 from 3 7 9"`` for ``3*7-9``)."""
    fn = VOTE_KEYS.get(reward_name, _default_key)
    return lambda completion: fn(completion, **reward_kwargs)


def vote(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[str | None, bool]:
    """``(voted answer, whether it is correct)``: the :func:`majority_vote` of ``answers``,
    correct when the first completion that gave it is (None votes are never correct)."""
    voted = majority_vote(answers)
    if voted is None:
        return None, False
    return voted, bool(correct[list(answers).index(voted)])
