"""Math answer accuracy: extraction, normalisation, numeric and symbolic comparison.

``math_accuracy`` compares the model's last ``\\boxed{}`` (or ``<answer>`` content) with
``row["answer"]`` in three stages: normalised strings, exact numbers, then symbolic
equivalence with ``math_verify`` (sympy). Sympy can hang on adversarial input: run this
reward through :class:`r1jax.rewards.RewardScorer`, whose workers enforce a per-call
timeout. When called directly from the main thread with no interval timer armed,
``math_verify``'s own ``signal.alarm`` timeouts are used as well.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from fractions import Fraction
from typing import Any

from r1jax.rewards.extract import answer_block, last_boxed
from r1jax.rewards.registry import register_reward

# Modules the scorer's workers import at start (math_verify + sympy take ~0.5 s).
WORKER_PRELOAD = ("math_verify",)

_TEXT_CMD = r"\\(?:text|textbf|textit|textrm|mbox|mathrm|operatorname)"
_TEXT_BLOCK_RE = re.compile(_TEXT_CMD + r"\s*\{([^{}]*)\}")
_UNIT_BLOCK_END_RE = re.compile(_TEXT_CMD + r"\s*\{\s*[A-Za-z][A-Za-z .]*\}(\^\{?\d\}?)?\s*$")
_UNITS = (
    "square units|sq units|units|unit|cm|mm|km|m|meters|meter|metres|inches|inch|in|feet|foot|ft|"
    "yards|yd|miles|mile|mph|degrees|degree|dollars|dollar|cents|cent|hours|hour|hrs|minutes|"
    "minute|min|seconds|second|sec|days|day|weeks|years|year|pounds|lbs|lb|kg|grams|g|liters|l"
)
_PLAIN_UNIT_RE = re.compile(r"^(.*\d)\s*(?:" + _UNITS + r")(?:\^\{?\d\}?)?\s*$")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?:\.|(?![A-Za-z]))")
_SPACING_RE = re.compile(r"\\[!,;: ]|\\q?quad(?![A-Za-z])|\\displaystyle(?![A-Za-z])|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_VAR_PREFIX_RE = re.compile(r"^[A-Za-z](?:_\{?\w\}?)?\s*=(?!=)")
_THOUSANDS_RE = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER_RE = re.compile(r"^(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d{1,3})?$")


def _read_arg(s: str, i: int) -> tuple[str, int] | None:
    """Read one TeX argument at ``s[i]``: ``{...}``, ``\\cmd`` or a single character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        depth = 0
        for j in range(i, len(s)):
            if s[j] == "{":
                depth += 1
            elif s[j] == "}":
                depth -= 1
                if depth == 0:
                    return s[i + 1 : j], j + 1
        return None
    if s[i] == "\\":
        m = re.match(r"\\[A-Za-z]+", s[i:])
        if m:
            return m.group(0), i + len(m.group(0))
    return s[i], i + 1


def _fix_command_args(s: str, command: str, nargs: int) -> str:
    """Brace the arguments of ``command``: ``\\frac12`` -> ``\\frac{1}{2}``."""
    out = []
    i = 0
    while (p := s.find(command, i)) >= 0:
        j = p + len(command)
        out.append(s[i:j])
        i = j
        if j < len(s) and s[j].isalpha():  # a longer command name, e.g. \\fracfoo
            continue
        optional = ""
        if s[j : j + 1] == "[" and "]" in s[j:]:  # optional argument: \\sqrt[3]{x}
            optional = s[j : s.index("]", j) + 1]
            j += len(optional)
        args = []
        for _ in range(nargs):
            read = _read_arg(s, j)
            if read is None:
                break
            args.append(read[0])
            j = read[1]
        if len(args) == nargs:
            out.append(optional + "".join("{" + a + "}" for a in args))
            i = j
    out.append(s[i:])
    return "".join(out)


def normalize_math_answer(answer: str) -> str:
    """Canonical string form of a LaTeX answer for exact string comparison.

    Strips ``$``, ``\\left``/``\\right``, thin spaces (``\\!``, ``\\,``), ``\\displaystyle``,
    degrees (``^\\circ``), percent and dollar signs, trailing text units (``\\text{ cm}``,
    ``5 cm``), a leading ``x =``, all whitespace and trailing periods; maps ``\\dfrac`` and
    ``\\tfrac`` to ``\\frac``, braces ``\\frac12`` -> ``\\frac{1}{2}`` and ``\\sqrt2`` ->
    ``\\sqrt{2}``, and unwraps a single ``\\boxed{...}``.
    """
    s = answer.strip().replace("\n", " ").replace("\u2212", "-")
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _SPACING_RE.sub(" ", s)
    s = re.sub(r"\\[dtc]frac(?![A-Za-z])", r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("{,}", ",")
    s = _UNIT_BLOCK_END_RE.sub("", s).strip() or s
    s = _TEXT_BLOCK_RE.sub(lambda m: m.group(1), s).strip()
    m = _PLAIN_UNIT_RE.match(s)
    if m:
        s = m.group(1)
    m = _VAR_PREFIX_RE.match(s)
    if m and s.count("=") == 1:
        s = s[m.end() :]
    s = _fix_command_args(s, "\\frac", 2)
    s = _fix_command_args(s, "\\sqrt", 1)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    s = re.sub(r"(?<![\d}A-Za-z])\.(\d)", r"0.\1", s)
    return s


def parse_number(s: str) -> Fraction | None:
    """Exact value of a normalised numeric answer, or ``None`` if it is not a plain number.

    Accepts integers, decimals, thousands separators (``1,000``), scientific notation
    with small exponents, ``a/b`` and ``\\frac{a}{b}`` of such numbers, with a sign.
    """
    s = s.strip()
    if not s or len(s) > 64:
        return None
    sign = 1
    while s[:1] in "+-" and s:
        sign = -sign if s[0] == "-" else sign
        s = s[1:]
    if s.startswith("\\frac{"):
        first = _read_arg(s, len("\\frac"))
        second = None if first is None else _read_arg(s, first[1])
        if first is None or second is None or second[1] != len(s):
            return None
        num, den = parse_number(first[0]), parse_number(second[0])
        if num is None or den is None or den == 0:
            return None
        return sign * num / den
    if s.count("/") == 1:
        a, b = s.split("/")
        num, den = parse_number(a), parse_number(b)
        if num is None or den is None or den == 0:
            return None
        return sign * num / den
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if not _PLAIN_NUMBER_RE.match(s):
        return None
    return sign * Fraction(s)


class _DropTimeoutDisabledWarning(logging.Filter):
    """Hide math_verify's "Timeout is disabled" warning: the scorer enforces the limit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def _signal_timeout(seconds: float) -> int | None:
    """``math_verify`` timeout: ``None`` when ``signal.alarm`` would fail or clobber a timer.

    ``signal.alarm`` works only in the main thread, and it would cancel an interval
    timer armed by the scorer's worker (which then enforces the limit itself).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None
    return max(1, int(round(seconds)))


def symbolic_equal(gold: str, pred: str, timeout_s: float = 5.0) -> bool:
    """Symbolic equivalence of two LaTeX answers with ``math_verify`` (False on any error)."""
    from math_verify import parse, verify

    timeout = _signal_timeout(timeout_s)
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=timeout)
        pred_parsed = parse(f"${pred}$", parsing_timeout=timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # math_verify/sympy failures mean "not shown equal"
        return False


def extract_math_answer(completion: str) -> str | None:
    """The model's final answer: last ``\\boxed{}``/``\\fbox{}``, else ``<answer>`` content."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    return answer_block(completion)


def gold_answer(row: dict[str, Any]) -> str:
    """``row["answer"]`` as a string; raises ``ValueError`` naming the field when missing."""
    if "answer" not in row or row["answer"] is None:
        raise ValueError(f"row has no 'answer' field (keys: {sorted(row)})")
    return str(row["answer"])


def answers_equal(gold: str, pred: str, symbolic: bool = True, timeout_s: float = 5.0) -> bool:
    """Whether two answer strings are equal: normalised string, exact number, then symbolic."""
    g, p = normalize_math_answer(gold), normalize_math_answer(pred)
    if not p:
        return False
    if g == p:
        return True
    g_num, p_num = parse_number(g), parse_number(p)
    if g_num is not None and p_num is not None:
        return g_num == p_num
    if not symbolic or len(pred) > 1000:
        return False
    return symbolic_equal(gold, pred, timeout_s)


@register_reward("math_accuracy", value_range=(0.0, 1.0))
def math_accuracy(
    completion: str, row: dict[str, Any], symbolic: bool = True, timeout_s: float = 5.0
) -> float:
    """1.0 if the completion's final answer equals ``row["answer"]``, else 0.0.

    The answer is the last ``\\boxed{}`` (or ``\\fbox{}``), else the last ``<answer>`` block;
    no answer scores 0. ``row["answer"]`` may itself contain a ``\\boxed{}`` (MATH
    solutions). ``symbolic=False`` skips the sympy stage. Range [0, 1].
    """
    gold = gold_answer(row)
    pred = extract_math_answer(completion)
    if pred is None:
        return 0.0
    return 1.0 if answers_equal(gold, pred, symbolic=symbolic, timeout_s=timeout_s) else 0.0
