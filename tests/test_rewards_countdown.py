"""Hand-checked table for the countdown reward and its whitelist evaluator."""

from fractions import Fraction

import pytest

from r1jax.rewards import countdown
from r1jax.rewards.countdown import InvalidExpression, evaluate_expression

ROW = {"numbers": [3, 5, 7], "target": 22}

CASES = [
    ("<answer>3*5+7</answer>", 1.0),
    ("<answer> (5 * 3) + 7 </answer>", 1.0),
    ("<think>try 7+5*3</think><answer>7 + 5 * 3</answer>", 1.0),
    ("<answer>3+5</answer> <answer>3*5+7</answer>", 1.0),  # last answer block
    ("<answer>3*5+7</answer> <answer>3+5</answer>", 0.1),
    ("<answer>3*5</answer>", 0.1),  # 7 missing
    ("<answer>3*5+7+3-3</answer>", 0.1),  # 3 reused
    ("<answer>3*5+7+0</answer>", 0.1),  # extra number
    ("<answer>3*5+7 = 22</answer>", 0.1),  # '=' is not allowed
    ("<answer>9**9**9</answer>", 0.1),  # power not allowed (and never evaluated)
    ("<answer>3*5^7</answer>", 0.1),
    ("<answer>(3+5)/(7-7)</answer>", 0.1),  # division by zero: well formed but wrong
    ("<answer>__import__('os').system('ls')</answer>", 0.1),
    ("<answer>abs(3)*5+7</answer>", 0.1),
    ("<answer>3.0*5+7</answer>", 0.1),  # float literal
    ("<answer>3*5+7)</answer>", 0.1),  # syntax error
    ("<answer>" + "(" * 300 + "3" + ")" * 300 + "</answer>", 0.1),  # too deep
    ("<answer>" + "+".join(["1"] * 400) + "</answer>", 0.1),  # too long
    ("<answer></answer>", 0.1),  # TinyZero: an extracted (empty) equation scores 0.1
    ("3*5+7", 0.0),  # no answer block
    ("<answer>3*5+7", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), CASES)
def test_countdown(completion, expected):
    assert countdown(completion, ROW) == expected


def test_countdown_division_and_unary_minus():
    row = {"numbers": [2, 4, 6, 8], "target": 3}
    assert countdown("<answer>(8 / 4) * 6 / (2 + 2)</answer>", row) == 0.1  # 2 reused
    assert countdown("<answer>6 / (8 / 4) + 2 - 2</answer>", row) == 0.1  # 2 reused
    assert countdown("<answer>(6 + 4 + 8) / 2 / 3</answer>", row) == 0.1  # 3 not given
    assert countdown("<answer>(8 + 4) / (6 - 2)</answer>", row) == 1.0  # 12 / 4
    assert countdown("<answer>-2 + 8 - 6 / 4 * 2</answer>", row) == 0.1  # = 3, but 2 twice
    assert countdown("<answer>8 - (-2) - 6 - 4</answer>", {**row, "target": 0}) == 1.0
    row = {"numbers": [1, 3], "target": 1}
    assert countdown("<answer>1 / 3 * 3</answer>", row) == 0.1  # 3 used twice
    assert countdown("<answer>3 / 3</answer>", {"numbers": [3, 3], "target": 1}) == 1.0


def test_countdown_huge_numbers():
    big = 10**70  # 233 bits: allowed as a literal, but products exceed MAX_BITS = 256
    row = {"numbers": [big, big, big, big], "target": 1}
    assert (
        countdown(f"<answer>{big} * {big} * {big} * {big}</answer>", {**row, "target": big**4})
        == 0.1
    )
    assert countdown(f"<answer>{big} / {big} + {big} - {big}</answer>", row) == 1.0
    huge = 10**90  # literal over MAX_BITS
    assert (
        countdown(
            f"<answer>{huge} - {huge} + 1</answer>", {"numbers": [huge, huge, 1], "target": 1}
        )
        == 0.1
    )


def test_countdown_custom_scores_and_bad_row():
    assert countdown("<answer>3*5+7</answer>", ROW, format_score=0.0, score=2.0) == 2.0
    assert countdown("<answer>3*5</answer>", ROW, format_score=0.0) == 0.0
    with pytest.raises(ValueError, match="numbers"):
        countdown("<answer>1</answer>", {"numbers": "3 5 7", "target": 22})
    with pytest.raises(ValueError, match="target"):
        countdown("<answer>1</answer>", {"numbers": [1], "target": "1"})


@pytest.mark.parametrize(
    ("expr", "value", "used"),
    [
        ("1+2*3", Fraction(7), [1, 2, 3]),
        ("(1+2)*3", Fraction(9), [1, 2, 3]),
        ("7/2", Fraction(7, 2), [7, 2]),
        ("-(4-6)", Fraction(2), [4, 6]),
        ("10 - 2 - 3", Fraction(5), [10, 2, 3]),
    ],
)
def test_evaluate_expression(expr, value, used):
    assert evaluate_expression(expr) == (value, used)


@pytest.mark.parametrize("expr", ["2**3", "x+1", "1 if 1 else 2", "[1]", "1//2", "1%2", "0x10"])
def test_evaluate_expression_rejects(expr):
    with pytest.raises(InvalidExpression):
        evaluate_expression(expr)
