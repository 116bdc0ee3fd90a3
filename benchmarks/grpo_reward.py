"""The cheap reward shared by both trainers in ``bench_grpo.py``.

r1jax imports ``benchmarks.grpo_reward:char_fraction`` (signature ``fn(completion, row)``);
TRL calls ``trl_char_fraction(completions, **kwargs)`` on a batch. Both compute the same value.
"""

from __future__ import annotations

from typing import Any

TARGET_CHAR = "e"


def char_fraction(completion: str, row: dict[str, Any] | None = None) -> float:
    """Fraction of the completion's characters equal to ``TARGET_CHAR`` (0 when empty)."""
    return completion.count(TARGET_CHAR) / max(len(completion), 1)


def trl_char_fraction(completions: list[str], **kwargs: Any) -> list[float]:
    """TRL ``reward_funcs`` form of :func:`char_fraction`: one float per completion ``[R]``."""
    return [char_fraction(c) for c in completions]
