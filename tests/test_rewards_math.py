"""Hand-checked tables for answer extraction, normalisation and math accuracy."""

from fractions import Fraction

import pytest

from r1jax.rewards import math_accuracy
from r1jax.rewards.extract import answer_block, last_boxed, think_block
from r1jax.rewards.math import normalize_math_answer, parse_number

BOXED = [
    ("the answer is \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
    ("\\boxed{1} then \\boxed{2}", "2"),  # last box wins
    ("\\fbox{7}", "7"),
    ("\\boxed{3} and finally \\fbox{4}", "4"),
    ("\\boxed 5 apples", "5"),
    ("\\boxed{a{b{c}}}", "a{b{c}}"),
    ("\\boxed{2} truncated \\boxed{\\frac{1}{", "2"),  # unbalanced last box: use earlier
    ("\\boxed{}", ""),
    ("no box here", None),
    ("\\boxedx{3}", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), BOXED)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_answer_and_think_blocks():
    assert answer_block("<answer>1</answer> x <answer> 2 </answer>") == " 2 "
    assert answer_block("<answer>open") is None
    assert answer_block("<answer>a\nb</answer>") == "a\nb"
    # an unclosed mention of the tag earlier (in the reasoning) is not part of the block
    assert answer_block("use the <answer> tag: 3*7-9</think>\n<answer>3*7-9</answer>") == "3*7-9"
    assert answer_block("<answer><answer>5</answer>") == "5"
    assert answer_block("<answer>1</answer> then <answer> open") == "1"
    assert think_block("<think>abc</think><answer>1</answer>") == "abc"
    assert think_block("prefilled reasoning</think> answer") == "prefilled reasoning"
    assert think_block("<think>truncated") == "truncated"
    assert think_block("plain") is None


NORMALIZE = [
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\tfrac{3}{4}", "\\frac{3}{4}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("\\frac1{2}", "\\frac{1}{2}"),
    ("\\frac{a}b", "\\frac{a}{b}"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("\\sqrt[3]8", "\\sqrt[3]{8}"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("\\!\\!12", "12"),
    ("1\\,000\\,000", "1000000"),
    ("10\\text{ cm}", "10"),
    ("3\\text{ cm}^2", "3"),
    ("5 cm", "5"),
    ("12 square units", "12"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90"),
    ("50\\%", "50"),
    ("\\$1,000", "1,000"),
    ("$x^2$", "x^2"),
    ("x = 5", "5"),
    ("k=-3", "-3"),
    ("y = 2x + 1", "2x+1"),
    (".5", "0.5"),
    ("5.", "5"),
    ("\\text{(A)}", "(A)"),
    ("\\boxed{7}", "7"),
    ("1{,}000", "1,000"),
    ("\\displaystyle\\frac{1}{3}", "\\frac{1}{3}"),
    ("\u22123", "-3"),
    ("", ""),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE)
def test_normalize(raw, expected):
    assert normalize_math_answer(raw) == expected


NUMBERS = [
    ("42", Fraction(42)),
    ("-7", Fraction(-7)),
    ("0.5", Fraction(1, 2)),
    ("1,000", Fraction(1000)),
    ("1,234.5", Fraction(2469, 2)),
    ("\\frac{1}{2}", Fraction(1, 2)),
    ("-\\frac{3}{4}", Fraction(-3, 4)),
    ("\\frac{0.5}{2}", Fraction(1, 4)),
    ("3/4", Fraction(3, 4)),
    ("1e3", Fraction(1000)),
    ("1/0", None),
    ("\\frac{1}{0}", None),
    ("1,00", None),  # not a thousands group
    ("x", None),
    ("\\sqrt{2}", None),
    ("1e99999", None),  # exponent too large to be treated as a plain number
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), NUMBERS)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


ACCURACY = [
    # (completion, gold, expected)
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\frac12}", "0.5", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 1.0),
    ("\\boxed{1/2}", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", 0.0),
    ("\\boxed{0.333}", "\\frac{1}{3}", 0.0),
    ("\\boxed{1,000}", "1000", 1.0),
    ("\\boxed{1000}", "1,000", 1.0),
    ("$\\boxed{10\\text{ cm}}$.", "10", 1.0),
    ("\\boxed{90^\\circ}", "90", 1.0),
    ("\\boxed{72.0}", "72", 1.0),
    ("\\boxed{1} wait, no: \\boxed{2}", "2", 1.0),
    ("\\boxed{2} wait, no: \\boxed{1}", "2", 0.0),
    ("<think>...</think><answer>7</answer>", "7", 1.0),
    ("<answer>\\boxed{8}</answer>", "8", 1.0),
    ("the answer is 7", "7", 0.0),  # no box and no answer tag
    ("", "7", 0.0),
    ("\\boxed{}", "7", 0.0),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{1}{2}\\sqrt{3}", 1.0),  # symbolic
    ("\\boxed{(x+1)^2}", "x^2+2x+1", 1.0),
    ("\\boxed{x^2+1}", "x^2+2x+1", 0.0),
    ("\\boxed{\\pi}", "\\pi", 1.0),
    ("\\boxed{3\\pi}", "\\pi", 0.0),
    ("\\boxed{x = 3}", "3", 1.0),
    ("\\boxed{\\left(1, 2\\right)}", "(1,2)", 1.0),
    ("\\boxed{3}", "\\boxed{3}", 1.0),  # MATH-style gold with a box
    ("\\boxed{\u00bd}", "\\frac{1}{2}", 0.0),  # unicode vulgar fraction is not parsed
    ("\\boxed{四}", "4", 0.0),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), ACCURACY)
def test_math_accuracy(completion, gold, expected):
    assert math_accuracy(completion, {"answer": gold}) == expected


def test_math_accuracy_numeric_gold_and_missing_answer():
    assert math_accuracy("\\boxed{12}", {"answer": 12}) == 1.0
    with pytest.raises(ValueError, match="answer"):
        math_accuracy("\\boxed{1}", {"question": "q"})


def test_math_accuracy_symbolic_can_be_disabled():
    row = {"answer": "x^2+2x+1"}
    assert math_accuracy("\\boxed{(x+1)^2}", row, symbolic=False) == 0.0
