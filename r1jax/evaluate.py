"""Evaluation estimators: unbiased pass@k, majority vote (maj@k / cons@k), greedy accuracy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

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
