"""Host-side rewards: pure-Python reward functions, a registry and a parallel scorer.

Every reward is ``fn(completion: str, row: dict, **kwargs) -> float``. Built-ins:
``math_accuracy``, ``gsm8k_accuracy``, ``format_strict``, ``format_tags``, ``countdown``,
``language_consistency``, ``overlong_penalty``, ``cosine_length``, ``repetition_penalty``,
``code_tests``. :class:`RewardScorer` combines weighted specs, routes rows by
``row["source"]`` and runs rewards in worker processes with per-call timeouts.
"""

from r1jax.rewards.code import code_tests
from r1jax.rewards.countdown import countdown
from r1jax.rewards.format import format_strict, format_tags
from r1jax.rewards.gsm8k import gsm8k_accuracy
from r1jax.rewards.language import language_consistency
from r1jax.rewards.length import cosine_length, overlong_penalty, repetition_penalty
from r1jax.rewards.math import math_accuracy
from r1jax.rewards.registry import (
    RewardInfo,
    RewardSpec,
    get_reward,
    list_rewards,
    parse_specs,
    register_reward,
    reward_info,
)
from r1jax.rewards.scorer import RewardScorer, ScoreHandle, ScoreResult

__all__ = [
    "RewardInfo",
    "RewardScorer",
    "RewardSpec",
    "ScoreHandle",
    "ScoreResult",
    "code_tests",
    "cosine_length",
    "countdown",
    "format_strict",
    "format_tags",
    "get_reward",
    "gsm8k_accuracy",
    "language_consistency",
    "list_rewards",
    "math_accuracy",
    "overlong_penalty",
    "parse_specs",
    "register_reward",
    "repetition_penalty",
    "reward_info",
]
