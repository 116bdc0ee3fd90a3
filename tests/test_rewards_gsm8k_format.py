"""Hand-checked tables for GSM8K accuracy and the format rewards."""

import pytest

from r1jax.rewards import format_strict, format_tags, gsm8k_accuracy

GOLD = {"answer": "She sold 48 / 2 = <<48/2=24>>24 clips in May.\n#### 72"}

GSM8K = [
    # (completion, flexible, strict)
    ("The answer is 72", 1.0, 0.0),  # strict needs #### or <answer>
    ("#### 72", 1.0, 1.0),
    ("#### 72.0", 1.0, 1.0),
    ("#### 72.00 dollars", 1.0, 1.0),
    ("#### $72", 1.0, 1.0),
    ("<answer>72</answer>", 1.0, 1.0),
    ("<answer>The total is $72.</answer>", 1.0, 1.0),
    ("<answer>72</answer> and 5 more", 0.0, 1.0),  # flexible takes the last number
    ("#### 72\n\nQuestion: what is 3 + 4? 7", 0.0, 1.0),  # strict: first number after ####
    ("I got 72, no wait, 70", 0.0, 0.0),
    ("-72", 0.0, 0.0),
    ("72.5", 0.0, 0.0),
    ("", 0.0, 0.0),
    ("<answer></answer>", 0.0, 0.0),
    ("七十二", 0.0, 0.0),
]


@pytest.mark.parametrize(("completion", "flexible", "strict"), GSM8K)
def test_gsm8k(completion, flexible, strict):
    assert gsm8k_accuracy(completion, GOLD) == flexible
    assert gsm8k_accuracy(completion, GOLD, mode="strict") == strict


def test_gsm8k_thousands_and_negative_gold():
    assert gsm8k_accuracy("so the cost is $1,000", {"answer": "#### 1,000"}) == 1.0
    assert gsm8k_accuracy("so the cost is 1000", {"answer": "#### 1,000"}) == 1.0
    assert gsm8k_accuracy("so 1,000,000 people", {"answer": "#### 1000000"}) == 1.0
    assert gsm8k_accuracy("the change is -5", {"answer": "#### -5"}) == 1.0
    assert gsm8k_accuracy("answer: 0.5", {"answer": "#### .5"}) == 1.0
    assert gsm8k_accuracy("answer: 18", {"answer": 18}) == 1.0  # gold without ####


def test_gsm8k_bad_rows_and_mode():
    with pytest.raises(ValueError, match="answer"):
        gsm8k_accuracy("1", {})
    with pytest.raises(ValueError, match="no number"):
        gsm8k_accuracy("1", {"answer": "#### unknown"})
    with pytest.raises(ValueError, match="mode"):
        gsm8k_accuracy("1", GOLD, mode="loose")


FORMAT = [
    # (completion, strict, tags)
    ("<think>reason</think><answer>42</answer>", 1.0, 1.0),
    (" <think>reason</think>\n\n<answer>42</answer>\n", 1.0, 1.0),  # after "Assistant:"
    ("<think>a\nb</think> <answer>c\nd</answer>", 1.0, 1.0),  # DOTALL
    ("<think></think><answer></answer>", 1.0, 1.0),
    ("<think>reason</think>", 0.0, 0.5),
    ("<answer>42</answer>", 0.0, 0.5),
    ("<think>r</think> text <answer>42</answer>", 0.0, 1.0),  # text between blocks
    ("<think>r</think><answer>42</answer> extra", 0.0, 1.0),  # text after the answer
    ("prefix <think>r</think><answer>42</answer>", 0.0, 1.0),
    ("<answer>42</answer><think>r</think>", 0.0, 1.0),  # wrong order
    ("<think>a</think><think>b</think><answer>1</answer>", 0.0, 0.5),  # two think blocks
    ("<think><think>a</think><answer>1</answer>", 0.0, 0.75),  # a think opened twice
    ("<think>r</think><answer>42", 0.0, 0.75),
    ("", 0.0, 0.0),
    ("<THINK>r</THINK><ANSWER>1</ANSWER>", 0.0, 0.0),
]


@pytest.mark.parametrize(("completion", "strict", "tags"), FORMAT)
def test_format(completion, strict, tags):
    assert format_strict(completion, {}) == strict
    assert format_tags(completion, {}) == tags


def test_format_prefilled_think():
    completion = "reasoning</think><answer>1</answer>"
    assert format_strict(completion, {}) == 0.0
    assert format_strict(completion, {}, prefilled_think=True) == 1.0
    assert format_tags(completion, {}) == 0.75
    assert format_tags(completion, {}, prefilled_think=True) == 1.0


@pytest.mark.parametrize(
    ("prompt", "completion", "strict", "tags"),
    [
        # the row's model input ends with <think> (prompt.prefill, R1-Distill's template)
        ("Q. Assistant: <think>", "r</think><answer>1</answer>", 1.0, 1.0),
        ("Q<|Assistant|><think>\n", "r</think><answer>1</answer>", 1.0, 1.0),
        ("Q. Assistant: <think>", "<think>r</think><answer>1</answer>", 0.0, 0.75),  # twice
        ("Q. Assistant:", "r</think><answer>1</answer>", 0.0, 0.75),
        ("Q. Assistant:", "<think>r</think><answer>1</answer>", 1.0, 1.0),
        ("Think with <think> tags. Assistant:", "r</think><answer>1</answer>", 0.0, 0.75),
    ],
)
def test_format_reads_a_prefilled_think_from_the_prompt(prompt, completion, strict, tags):
    row = {"text": prompt}
    assert (format_strict(completion, row), format_tags(completion, row)) == (strict, tags)
    # an explicit setting overrides what the prompt says
    assert format_strict(completion, row, prefilled_think=False) == format_strict(completion, {})
