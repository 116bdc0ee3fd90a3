"""GSM8K accuracy: the gold answer follows ``####``; the model answer is a number."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from r1jax.rewards.extract import answer_block
from r1jax.rewards.registry import register_reward

# A number, optionally with a leading $ and thousands separators: 1,000.50  $72  -3  .5
NUMBER_RE = re.compile(r"-?(?:\$\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\.\d+")


def parse_gsm8k_number(text: str) -> Fraction | None:
    """Exact value of a number matched by ``NUMBER_RE`` (``$`` and commas removed)."""
    cleaned = re.sub(r"[\s$,]", "", text)
    if not cleaned or len(cleaned) > 64:
        return None
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _first_number(text: str) -> Fraction | None:
    m = NUMBER_RE.search(text)
    return None if m is None else parse_gsm8k_number(m.group(0))


def _last_number(text: str) -> Fraction | None:
    matches = NUMBER_RE.findall(text)
    return None if not matches else parse_gsm8k_number(matches[-1])


def gsm8k_gold(row: dict[str, Any]) -> Fraction:
    """The gold number of a GSM8K row (text after the last ``####``, or the whole answer)."""
    if "answer" not in row or row["answer"] is None:
        raise ValueError(f"row has no 'answer' field (keys: {sorted(row)})")
    answer = str(row["answer"])
    tail = answer.rsplit("####", 1)[-1]
    value = _first_number(tail)
    if value is None:
        raise ValueError(f"row 'answer' has no number after '####': {answer[-80:]!r}")
    return value


def extract_gsm8k_answer(completion: str, mode: str = "flexible") -> Fraction | None:
    """The model's numeric answer.

    ``strict``: the first number after the last ``####``, else the last number inside the
    last ``<answer>`` block. ``flexible``: the last number anywhere in the completion.
    """
    if mode == "strict":
        if "####" in completion:
            return _first_number(completion.rsplit("####", 1)[-1])
        block = answer_block(completion)
        return None if block is None else _last_number(block)
    if mode == "flexible":
        return _last_number(completion)
    raise ValueError(f"gsm8k_accuracy: mode must be 'strict' or 'flexible', got {mode!r}")


@register_reward("gsm8k_accuracy", value_range=(0.0, 1.0))
def gsm8k_accuracy(completion: str, row: dict[str, Any], mode: str = "flexible") -> float:
    """1.0 if the extracted number equals the gold number exactly (``72.0 == 72``), else 0.0.

    Commas and ``$`` are removed before comparing. ``mode`` is ``"flexible"`` (last number)
    or ``"strict"`` (after ``####`` or in ``<answer>``). Range [0, 1].
    """
    gold = gsm8k_gold(row)
    pred = extract_gsm8k_answer(completion, mode)
    return 1.0 if pred is not None and pred == gold else 0.0
