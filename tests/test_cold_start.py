"""Countdown solver and cold-start traces, checked by an independent evaluator and brute force."""

import ast
import json
import re
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from r1jax.cold_start import (
    COUNTDOWN_CHARS,
    countdown_prompt,
    countdown_trace,
    make_countdown_sft_examples,
    solve_countdown,
)
from r1jax.data.countdown import CountdownSpec, generate_countdown
from r1jax.tokenizer import CharTokenizer

TRACE_RE = re.compile(r"<think>(.*)</think> <answer>(.*)</answer>")
STEP_RE = re.compile(r"(-?\d+(?:/\d+)?)([-+*/])(-?\d+(?:/\d+)?)=(-?\d+(?:/\d+)?)")


def _eval(expr: str) -> tuple[Fraction, list[int]]:
    """Exact value and integer literals of an arithmetic expression (test's own evaluator)."""

    def walk(node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            ops = {
                ast.Add: a.__add__,
                ast.Sub: a.__sub__,
                ast.Mult: a.__mul__,
                ast.Div: a.__truediv__,
            }
            return ops[type(node.op)](b)
        raise AssertionError(f"unexpected node {ast.dump(node)} in {expr!r}")

    literals: list[int] = []
    return walk(ast.parse(expr, mode="eval").body), literals


def _reachable(values: tuple[Fraction, ...], memo: dict) -> set[Fraction]:
    """All values of expressions using each of `values` once (independent brute force)."""
    key = tuple(sorted(values))
    if key in memo:
        return memo[key]
    if len(values) == 1:
        return {values[0]}
    out: set[Fraction] = set()
    n = len(values)
    # Split the multiset into two non-empty parts; combine every value of one with the other.
    for mask in range(1, 2**n - 1):
        left = tuple(values[i] for i in range(n) if mask >> i & 1)
        right = tuple(values[i] for i in range(n) if not mask >> i & 1)
        for a in _reachable(left, memo):
            for b in _reachable(right, memo):
                out |= {a + b, a - b, a * b}
                if b != 0:
                    out.add(a / b)
    memo[key] = out
    return out


def _check_solution(numbers, target, expr):
    value, literals = _eval(expr)
    assert value == target, (numbers, target, expr)
    assert Counter(literals) == Counter(numbers), (numbers, expr)


@pytest.mark.parametrize(
    "numbers,target,solvable",
    [
        ([3, 7, 9], 12, True),
        ([1, 3, 4, 6], 24, True),  # needs fractions: 6/(1-3/4)
        ([1, 5, 5, 5], 24, True),  # 5*(5-1/5)
        ([1, 1, 1], 100, False),
        ([2, 2], 5, False),
        ([7], 7, True),
        ([7], 8, False),
        ([0, 5, 9], 45, True),
        ([10, 10, 10, 10], 1, True),
        ([2, 3, 5], 25, True),  # (2+3)*5: parentheses needed
        ([8, 2, 6], 1, True),  # (8-6)/2
        ([4, 4, 7], 7, True),
    ],
)
def test_solve_hand_cases(numbers, target, solvable):
    expr = solve_countdown(numbers, target)
    assert (expr is not None) == solvable
    if solvable:
        _check_solution(numbers, target, expr)


def test_solve_matches_independent_brute_force():
    rng = np.random.default_rng(7)
    seen = Counter()
    for _ in range(120):
        numbers = rng.integers(1, 13, size=int(rng.integers(3, 5))).tolist()
        target = int(rng.integers(1, 60))
        expected = Fraction(target) in _reachable(tuple(map(Fraction, numbers)), {})
        expr = solve_countdown(numbers, target)
        assert (expr is not None) == expected, (numbers, target, expr)
        if expr is not None:
            _check_solution(numbers, target, expr)
        seen[expected] += 1
    assert seen[True] > 20 and seen[False] > 10  # both branches exercised


def test_solutions_prefer_integer_steps():
    # 3*7-9 exists, so no fractional or negative intermediate result is used.
    assert solve_countdown([3, 7, 9], 12) in {"3*7-9", "7*3-9"}


@pytest.mark.parametrize("reflect_prob", [0.0, 1.0])
def test_traces_parse_and_steps_are_correct(reflect_prob):
    rng = np.random.default_rng(0)
    tok = CharTokenizer(COUNTDOWN_CHARS)
    records = generate_countdown(CountdownSpec(seed=1, max_value=20, max_target=60), "train", 25)
    for rec in records:
        numbers, target = rec["numbers"], rec["target"]
        trace = countdown_trace(numbers, target, rng, reflect_prob=reflect_prob)
        m = TRACE_RE.fullmatch(trace)
        assert m, trace
        think, answer = m.groups()
        _check_solution(numbers, target, answer)
        attempts = think.split(" wait ")
        assert len(attempts) == (2 if reflect_prob == 1.0 else 1), trace
        for k, attempt in enumerate(attempts):
            steps = attempt.split(" ")
            assert len(steps) == len(numbers) - 1, trace  # one step per merge
            for step in steps:
                a, op, b, c = STEP_RE.fullmatch(step).groups()
                assert _eval(f"({a}){op}({b})")[0] == Fraction(c), step
            final = Fraction(STEP_RE.fullmatch(steps[-1]).group(4))
            assert (final == target) == (k == len(attempts) - 1), trace
        text = countdown_prompt(numbers, target) + trace
        assert set(text) <= set(COUNTDOWN_CHARS)
        assert tok.decode(tok.encode(text)) == text


def test_countdown_chars_cover_words():
    for word in ("<think>", "</think>", "<answer>", "</answer>", "Using", "make", "wait"):
        assert set(word) <= set(COUNTDOWN_CHARS)
    assert set("0123456789+-*/()= ") <= set(COUNTDOWN_CHARS)
    assert len(set(COUNTDOWN_CHARS)) == len(COUNTDOWN_CHARS)
    assert countdown_prompt([3, 7, 9], 12) == "Using 3 7 9 make 12"


def test_make_examples_skips_unsolvable_and_is_deterministic():
    records = [
        {"numbers": [3, 7, 9], "target": 12},
        {"numbers": [1, 1, 1], "target": 100},
        {"numbers": [2, 5, 6, 8], "target": 9},
    ]
    ex = make_countdown_sft_examples(records, rng=np.random.default_rng(3))
    assert [p for p, _ in ex] == ["Using 3 7 9 make 12", "Using 2 5 6 8 make 9"]
    assert ex == make_countdown_sft_examples(records, rng=np.random.default_rng(3))
    custom = make_countdown_sft_examples(
        records, lambda r: f"T{r['target']}", np.random.default_rng(3)
    )
    assert [p for p, _ in custom] == ["T12", "T9"]
    assert [c for _, c in custom] == [c for _, c in ex]


def test_reflection_probability_is_respected():
    rng = np.random.default_rng(11)
    traces = [countdown_trace([4, 6, 8, 3], 21, rng, reflect_prob=0.3) for _ in range(300)]
    share = np.mean([" wait " in t for t in traces])
    assert 0.2 < share < 0.4


def test_generated_records_are_all_solvable():
    records = generate_countdown(CountdownSpec(seed=2), "train", 30)
    assert len(make_countdown_sft_examples(records, rng=np.random.default_rng(0))) == 30


@pytest.mark.parametrize(
    "numbers,target,match",
    [
        ([1, 2, 3, 4, 5, 6], 10, "1..5 ints"),
        ([], 3, "1..5 ints"),
        ([1, -2], 3, "non-negative"),
        ([1, 2.5], 3, "non-negative int"),
        ([1, 2], 3.0, "target"),
    ],
)
def test_bad_inputs_raise(numbers, target, match):
    with pytest.raises(ValueError, match=match):
        solve_countdown(numbers, target)


def test_unsolvable_trace_and_bad_record_raise():
    with pytest.raises(ValueError, match="no solution"):
        countdown_trace([1, 1, 1], 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="record 0 has no field"):
        make_countdown_sft_examples([{"numbers": [1, 2]}])
    with pytest.raises(ValueError, match="reflect_prob"):
        countdown_trace([1, 2], 3, np.random.default_rng(0), reflect_prob=1.5)


def test_held_out_cold_start_traces_are_other_problems():
    from r1jax.build import build_tokenizer
    from r1jax.config import ConfigError, base_config
    from r1jax.recipes import sft_examples

    c = base_config()
    c.tokenizer.chars = COUNTDOWN_CHARS
    c.cold_start.update(dict(task="countdown", steps=1, examples=300, eval_examples=0))
    tok = build_tokenizer(c)
    assert sft_examples(c, tok, held_out=True) == []  # none asked for
    c.cold_start.eval_examples = 100
    train, held_out = sft_examples(c, tok), sft_examples(c, tok, held_out=True)
    assert len(held_out) == 100 and len(train) == 300
    assert not {p for p, _ in held_out} & {p for p, _ in train}  # other problems
    assert all("<answer>" in completion for _, completion in held_out)
    c.data.prompt_builder = "countdown_compat"  # a typo: the RL data refuses it, so does SFT
    with pytest.raises(ConfigError, match=r"config.data.prompt_builder='countdown_compat' is "
                       r"not one of \['countdown_compact'\]"):  # fmt: skip
        sft_examples(c, tok)


def test_sft_data_drops_the_think_that_a_prefill_already_wrote(tmp_path, capsys):
    """prompt.prefill="<think>" ends every prompt with the tag the traces start with: the SFT
    completions (synthetic and from a file) and reward-model pairs continue after it."""
    from r1jax.build import build_tokenizer
    from r1jax.config import base_config
    from r1jax.recipes import sft_examples
    from r1jax.rm_command import load_pairs

    c = base_config()
    c.tokenizer.chars = COUNTDOWN_CHARS
    c.cold_start.update(dict(task="countdown", steps=1, examples=20))
    tok = build_tokenizer(c)
    plain = sft_examples(c, tok)
    c.prompt.prefill = "<think>"
    prefilled = sft_examples(c, tok)
    assert all(c.startswith("<think>") for _, c in plain)
    for (p0, c0), (p1, c1) in zip(plain, prefilled, strict=True):
        assert p1 == p0 + "<think>" and c1 == c0.removeprefix("<think>")
        assert p1 + c1 == p0 + c0  # the same text, split after the prefill
    rows = [
        {
            "prompt": "Using 1 2 make 3",
            "completion": "<think>1+2=3</think> <answer>1+2</answer>",
            "chosen": "<think>1+2=3</think>",
            "rejected": "3</think>",
        }
    ]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c.cold_start.update(dict(task="file", path=str(path)))
    c.reward_model.train_path = str(path)
    [(prompt, completion)] = sft_examples(c, tok)
    assert prompt.endswith("<think>") and completion == "1+2=3</think> <answer>1+2</answer>"
    assert "removed the <think> that starts 1 of the texts" in capsys.readouterr().out
    [(_, chosen, rejected)] = load_pairs(c, "train_path", tok)
    assert (chosen, rejected) == ("1+2=3</think>", "3</think>")


def test_a_prompt_builder_names_the_field_a_record_lacks():
    """data.prompt_builder=countdown_compact on a file of plain prompts: one line naming the
    builder, the missing field and the record (a KeyError traceback before)."""
    from r1jax.config import ConfigError
    from r1jax.recipes import PromptMappedSource

    source = PromptMappedSource([{"numbers": [1, 2], "target": 3}, {"prompt": "hi"}],
                                "countdown_compact")  # fmt: skip
    assert "3" in source[0]["prompt"]
    said = r"^config.data.prompt_builder='countdown_compact' reads the field 'numbers' that "
    with pytest.raises(ConfigError, match=said + r"record 1 lacks \(its fields: \['prompt'\]"):
        source[1]
