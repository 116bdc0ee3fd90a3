"""Hand-checked tables for language consistency and the length-shaped rewards."""

import math

import pytest

from r1jax.rewards import (
    cosine_length,
    language_consistency,
    overlong_penalty,
    repetition_penalty,
)
from r1jax.rewards.language import word_scripts

LANGUAGE = [
    # (completion, language, expected)
    ("<think>Let me add the numbers.</think><answer>5</answer>", "en", 1.0),
    ("<think>我们先计算</think><answer>5</answer>", "zh", 1.0),  # 5 ideographs
    ("<think>我们先计算</think>", "en", 0.0),
    ("<think>我们 compute 一下</think>", "zh", 0.8),  # 4 han + 1 latin word
    ("<think>我们 compute 一下</think>", "en", 0.2),
    ("<think>first 计算 then 检查 done</think>", "en", 3 / 7),  # 3 latin, 4 han (2+2)
    ("<think>x + y = 2, 所以 x = 1</think>", "zh", 0.4),  # x, y, x latin; 所以 = 2 han
    ("<think>naïve café über</think>", "en", 1.0),  # accented Latin letters
    ("<think>Привет мир ok</think>", "en", 1 / 3),
    ("<think>Привет мир ok</think>", "ru", 2 / 3),
    ("<think>1 + 2 = 3 !!!</think>", "en", 1.0),  # no words: nothing in another language
    ("<think></think><answer>words here</answer>", "en", 1.0),  # empty CoT
    ("<think>8+2=10 10*3=30</think> <answer>(8+2)*3</answer>", "zh", 1.0),  # tags not words
    ("<answer>3+9</answer>", "zh", 1.0),  # no think block, only tags: no words
    ("<think>4-1=3</thinswer>我们", "zh", 1.0),  # a garbled tag is not a word either
    ("<think>x=1 所以</think>", "zh", 2 / 3),  # 1 latin + 2 han
    ("no tags, plain English words", "en", 1.0),  # whole completion without tags
    ("reasoning in English</think><answer>答案</answer>", "en", 1.0),  # prefilled <think>
    ("", "en", 1.0),
    ("<think>日本語のテキスト</think>", "ja", 1.0),
    ("<think>안녕하세요 world</think>", "ko", 0.5),
]


@pytest.mark.parametrize(("completion", "language", "expected"), LANGUAGE)
def test_language_consistency(completion, language, expected):
    value = language_consistency(completion, {"language": language})
    assert value == pytest.approx(expected)


def test_language_defaults_and_errors():
    assert language_consistency("<think>hello</think>", {}) == 1.0  # default "en"
    with pytest.raises(ValueError, match="language"):
        language_consistency("hi", {"language": "klingon"})


def test_word_scripts():
    assert word_scripts("Hi 世界 Мир 2+2") == ["latin", "han", "han", "cyrillic"]
    assert word_scripts("<answer>答</answer><tool_call>") == ["han"]
    assert word_scripts("a < b and c > d") == ["latin"] * 5  # not a tag


OVERLONG = [
    # (tokens, expected) with max_len=100, cache_len=20: penalty starts after 80
    (0, 0.0),
    (80, 0.0),
    (81, -0.05),
    (90, -0.5),
    (100, -1.0),
    (101, -1.0),
    (10**6, -1.0),
]


@pytest.mark.parametrize(("tokens", "expected"), OVERLONG)
def test_overlong_penalty(tokens, expected):
    row = {"completion_tokens": tokens}
    assert overlong_penalty("", row, max_len=100, cache_len=20) == pytest.approx(expected)


def test_overlong_penalty_word_count_and_errors():
    assert overlong_penalty("a " * 90, {}, max_len=100, cache_len=20) == pytest.approx(-0.5)
    assert overlong_penalty("a " * 10, {}) == 0.0  # defaults 4096 / 512
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty("", {}, max_len=10, cache_len=20)
    with pytest.raises(ValueError, match="completion_tokens"):
        overlong_penalty("", {"completion_tokens": -1})


COSINE = [
    # (tokens, correct, expected) with max_len=100 and the open-r1 default values
    (0, True, 1.0),
    (50, True, 0.75),  # cos(pi/2) = 0: midpoint of [0.5, 1.0]
    (100, True, 0.5),
    (200, True, 0.5),  # clipped at max_len
    (0, False, -1.0),
    (50, False, -0.75),
    (100, False, -0.5),
    (25, True, 0.5 + 0.25 * (1 + math.cos(math.pi / 4))),
]


@pytest.mark.parametrize(("tokens", "correct", "expected"), COSINE)
def test_cosine_length(tokens, correct, expected):
    completion = "\\boxed{4}" if correct else "\\boxed{5}"
    row = {"answer": "4", "completion_tokens": tokens}
    assert cosine_length(completion, row, max_len=100) == pytest.approx(expected)


def test_cosine_length_other_accuracy():
    row = {"answer": "#### 4", "completion_tokens": 0}
    assert cosine_length("it is 4", row, accuracy="gsm8k_accuracy") == pytest.approx(1.0)
    assert cosine_length("it is 5", row, accuracy="gsm8k_accuracy") == pytest.approx(-1.0)


REPETITION = [
    # (completion, ngram_size, expected) with max_penalty=-1
    ("", 3, 0.0),
    ("one two", 3, 0.0),  # fewer words than n
    ("a b c d e", 3, 0.0),  # 3 trigrams, all unique
    ("a b c a b c", 3, -0.25),  # 4 trigrams (abc bca cab abc), 3 unique
    ("a a a a a", 3, -2 / 3),  # 3 trigrams, 1 unique
    ("A b C a B c", 3, -0.25),  # lower-cased
    ("x x", 1, -0.5),
]


@pytest.mark.parametrize(("completion", "n", "expected"), REPETITION)
def test_repetition_penalty(completion, n, expected):
    assert repetition_penalty(completion, {}, ngram_size=n) == pytest.approx(expected)


def test_repetition_penalty_scale_and_errors():
    assert repetition_penalty("a a a a a", {}, max_penalty=-0.3) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="max_penalty"):
        repetition_penalty("a", {}, max_penalty=0.5)
