"""Property tests: every reward returns a float in its documented range and never raises
on arbitrary or adversarial completions."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1jax.rewards import get_reward, reward_info

PIECES = [
    "\\boxed{", "\\fbox{", "\\boxed ", "{", "}", "\\{", "\\}", "<answer>", "</answer>",
    "<think>", "</think>", "\\frac", "\\dfrac", "\\sqrt", "\\text{", "\\left(", "\\right)",
    "^", "_", "0", "1", "7", "9", "12", "10000000000", ",", ".", "-", "+", "*", "/", "**",
    "(", ")", "=", "$", "\\", "%", "####", " ", "\n", "x", "e", "中", "文", "Ж", "\u200b",
    "```python\n", "```", "9**9**9", "\\infty", "\\pi",
]  # fmt: skip
adversarial = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
completions = st.one_of(st.text(max_size=200), adversarial)

ROWS = {
    "math_accuracy": {"answer": "\\frac{1}{2}"},
    "gsm8k_accuracy": {"answer": "#### 1,000"},
    "format_strict": {},
    "format_tags": {},
    "countdown": {"numbers": [3, 5, 7], "target": 22},
    "language_consistency": {"language": "zh"},
    "overlong_penalty": {},
    "cosine_length": {"answer": "1"},
    "repetition_penalty": {},
}
KWARGS = {
    "overlong_penalty": {"max_len": 20, "cache_len": 5},  # make every branch reachable
    "cosine_length": {"max_len": 30},
}
SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_range(name, value):
    lo, hi = reward_info(name).value_range
    assert isinstance(value, float), (name, value)
    assert math.isfinite(value) and lo <= value <= hi, (name, value)


@pytest.mark.parametrize("name", sorted(ROWS))
@SETTINGS
@given(completion=completions)
def test_reward_in_range_on_any_text(name, completion):
    check_range(name, get_reward(name)(completion, ROWS[name], **KWARGS.get(name, {})))


@SETTINGS
@given(gold=completions, completion=completions)
def test_math_accuracy_any_gold(gold, completion):
    check_range("math_accuracy", get_reward("math_accuracy")(completion, {"answer": gold}))


@SETTINGS
@given(completion=completions, language=st.sampled_from(["en", "zh", "ja", "ru"]))
def test_language_any_language(completion, language):
    value = get_reward("language_consistency")(completion, {"language": language})
    check_range("language_consistency", value)


@settings(max_examples=15, deadline=None, database=None)
@given(body=st.one_of(st.text(max_size=60), adversarial))
def test_code_tests_in_range(body):
    value = get_reward("code_tests")(f"```python\n{body}\n```", {"tests": ["assert f() == 1"]})
    check_range("code_tests", value)


@SETTINGS
@given(tokens=st.integers(0, 10**7), words=completions)
def test_length_rewards_in_range_for_any_token_count(tokens, words):
    row = {"completion_tokens": tokens, "answer": "1"}
    check_range("overlong_penalty", get_reward("overlong_penalty")(words, row))
    check_range("cosine_length", get_reward("cosine_length")(words, row))


@SETTINGS
@given(
    numbers=st.lists(st.integers(0, 10**6), min_size=1, max_size=5),
    target=st.integers(-(10**6), 10**6),
    completion=completions,
)
def test_countdown_in_range_for_any_row(numbers, target, completion):
    value = get_reward("countdown")(completion, {"numbers": numbers, "target": target})
    assert value in (0.0, 0.1, 1.0)
