"""Format rewards for the ``<think>...</think> <answer>...</answer>`` convention."""

from __future__ import annotations

import re
from typing import Any

from r1jax.rewards.registry import register_reward

_STRICT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@register_reward("format_strict", value_range=(0.0, 1.0))
def format_strict(completion: str, row: dict[str, Any], prefilled_think: bool = False) -> float:
    """1.0 if the whole completion is ``<think>...</think>`` then ``<answer>...</answer>``.

    Leading and trailing whitespace is allowed (the R1-Zero prompt ends with
    ``Assistant:``). ``prefilled_think=True`` means the prompt already ends with
    ``<think>``, which is prepended before matching. Range {0, 1}.
    """
    text = "<think>" + completion if prefilled_think else completion
    return 1.0 if _STRICT_RE.fullmatch(text) else 0.0


@register_reward("format_tags", value_range=(0.0, 1.0))
def format_tags(completion: str, row: dict[str, Any], prefilled_think: bool = False) -> float:
    """0.25 for each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` present once.

    ``prefilled_think=True`` counts the ``<think>`` that ended the prompt. Range [0, 1].
    """
    text = "<think>" + completion if prefilled_think else completion
    return 0.25 * sum(text.count(tag) == 1 for tag in TAGS)
