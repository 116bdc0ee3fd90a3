"""Format rewards for the ``<think>...</think> <answer>...</answer>`` convention."""

from __future__ import annotations

import re
from typing import Any

from r1jax.rewards.extract import THINK, opens_think
from r1jax.rewards.registry import register_reward

# one reasoning block (no second <think> inside it), then the answer
_STRICT_RE = re.compile(
    r"\s*<think>(?:(?!<think>).)*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL
)
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def with_prompt_think(completion: str, row: dict[str, Any], prefilled_think: bool | None) -> str:
    """``completion`` with the ``<think>`` that ended its prompt in front: when
    ``prefilled_think`` is True, or None and the row's model input (``row["text"]``, the
    prompt as the sampler saw it) ends with ``<think>`` (``prompt.prefill``, or a chat
    template that opens the reasoning, as R1-Distill's does)."""
    if prefilled_think is None:
        prefilled_think = opens_think(str(row.get("text", "")))
    return THINK + completion if prefilled_think else completion


@register_reward("format_strict", value_range=(0.0, 1.0))
def format_strict(
    completion: str, row: dict[str, Any], prefilled_think: bool | None = None
) -> float:
    """1.0 if the whole completion is ``<think>...</think>`` then ``<answer>...</answer>``.

    Leading and trailing whitespace is allowed (the R1-Zero prompt ends with
    ``Assistant:``). A ``<think>`` that ended the prompt counts as the completion's (see
    :func:`with_prompt_think`; ``prefilled_think`` True / False overrides that reading of
    the row). Range {0, 1}.
    """
    text = with_prompt_think(completion, row, prefilled_think)
    return 1.0 if _STRICT_RE.fullmatch(text) else 0.0


@register_reward("format_tags", value_range=(0.0, 1.0))
def format_tags(completion: str, row: dict[str, Any], prefilled_think: bool | None = None) -> float:
    """0.25 for each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` present once.

    A ``<think>`` that ended the prompt counts (as in :func:`format_strict`). Range [0, 1].
    """
    text = with_prompt_think(completion, row, prefilled_think)
    return 0.25 * sum(text.count(tag) == 1 for tag in TAGS)
