"""Length-shaped rewards: DAPO overlong penalty, cosine-scaled length, n-gram repetition.

Lengths are in tokens: ``row["completion_tokens"]`` when present (the trainer knows the
exact count), otherwise the number of whitespace-separated words.
"""

from __future__ import annotations

import math
from typing import Any

from r1jax.rewards.registry import get_reward, register_reward

WORKER_PRELOAD = ("math_verify",)  # cosine_length calls math_accuracy by default


def completion_length(completion: str, row: dict[str, Any]) -> int:
    """``row["completion_tokens"]`` if given, else the whitespace word count."""
    n = row.get("completion_tokens")
    if n is None:
        return len(completion.split())
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"row 'completion_tokens' must be a non-negative int, got {n!r}")
    return n


@register_reward("overlong_penalty", value_range=(-1.0, 0.0))
def overlong_penalty(
    completion: str, row: dict[str, Any], max_len: int = 4096, cache_len: int = 512
) -> float:
    """DAPO soft overlong punishment for a completion of length ``L``.

    ``0`` if ``L <= max_len - cache_len``; ``(max_len - cache_len - L) / cache_len``
    (linear from 0 to -1) up to ``L = max_len``; ``-1`` beyond. Range [-1, 0].
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(
            f"overlong_penalty needs 0 < cache_len <= max_len, got {cache_len}, {max_len}"
        )
    length = completion_length(completion, row)
    start = max_len - cache_len
    if length <= start:
        return 0.0
    if length <= max_len:
        return (start - length) / cache_len
    return -1.0


@register_reward("cosine_length", value_range=(-1.0, 1.0))
def cosine_length(
    completion: str,
    row: dict[str, Any],
    max_len: int = 1000,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    accuracy: str = "math_accuracy",
) -> float:
    """Cosine-scaled length reward ("Demystifying Long CoT", open-r1).

    With ``t = min(L / max_len, 1)`` and ``c = cos(pi * t)``: a correct answer gets
    ``min_value_correct + (max_value_correct - min_value_correct) * (1 + c) / 2`` (shorter
    is better, ``max_value_correct`` at L=0); a wrong one gets
    ``max_value_wrong + (min_value_wrong - max_value_wrong) * (1 + c) / 2`` (longer is
    penalised less: ``min_value_wrong`` at L=0, ``max_value_wrong`` at ``max_len``).
    Correctness is the registered reward ``accuracy`` (> 0.5). Range [-1, 1] by default.
    """
    if max_len <= 0:
        raise ValueError(f"cosine_length needs max_len > 0, got {max_len}")
    correct = get_reward(accuracy)(completion, row) > 0.5
    progress = min(completion_length(completion, row) / max_len, 1.0)
    cosine = math.cos(progress * math.pi)
    if correct:
        lo, hi = min_value_correct, max_value_correct
    else:
        lo, hi = max_value_wrong, min_value_wrong
    return lo + 0.5 * (hi - lo) * (1.0 + cosine)


@register_reward("repetition_penalty", value_range=(-1.0, 0.0))
def repetition_penalty(
    completion: str, row: dict[str, Any], ngram_size: int = 3, max_penalty: float = -1.0
) -> float:
    """``max_penalty * (1 - unique_ngrams / total_ngrams)`` over lower-cased word n-grams.

    Completions with fewer than ``ngram_size`` words score 0. Range [max_penalty, 0].
    """
    if max_penalty > 0:
        raise ValueError(f"repetition_penalty: max_penalty must be <= 0, got {max_penalty}")
    if ngram_size < 1:
        raise ValueError(f"repetition_penalty: ngram_size must be >= 1, got {ngram_size}")
    words = completion.lower().split()
    if len(words) < ngram_size:
        return 0.0
    ngrams = [tuple(words[i : i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
    return max_penalty * (1.0 - len(set(ngrams)) / len(ngrams))
