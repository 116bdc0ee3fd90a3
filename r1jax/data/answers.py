"""Gold-answer extraction used when building datasets.

These parsers turn a dataset's raw answer or solution text into the gold `answer` string of the
record schema (see `r1jax.data.records`). Each raises `ValueError` with a short reason when the
text holds no usable answer; the callers turn that into a `DataError` naming file and row.

- `gsm8k`:   text after the last ``####`` (``"... #### 1,234"`` -> ``"1234"``), must be a number.
- `boxed`:   content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), or
             ``\\boxed 5`` (argument without braces), non-empty.
- `integer`: an integer such as an AIME answer (``"033"`` -> ``"33"``, ``"7.0"`` -> ``"7"``).
- `raw`:     the stripped text itself, non-empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")


def last_boxed(text: str) -> str | None:
    """Returns the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in `text`.

    Braces are matched with a depth counter, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``.
    ``\\boxed 5`` (a bare argument up to the next whitespace or ``$``) is also accepted.
    Returns None when there is no box or the last box is never closed.
    """
    starts = [m for m in re.finditer(r"\\(boxed|fbox)\b", text)]
    if not starts:
        return None
    pos = starts[-1].end()
    rest = text[pos:]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):
        bare = re.match(r"\s+([^\s$]+)", rest)
        return bare.group(1) if bare else None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None


def parse_raw(text: str) -> str:
    """Returns `text` stripped; raises ValueError if empty."""
    answer = str(text).strip()
    if not answer:
        raise ValueError("empty answer")
    return answer


def parse_gsm8k(text: str) -> str:
    """Returns the number after the last ``####`` with commas and spaces removed."""
    if "####" not in text:
        raise ValueError("no '####' marker")
    answer = text.rsplit("####", 1)[1].strip().replace(",", "").replace(" ", "")
    if not answer:
        raise ValueError("empty answer after '####'")
    if not _NUMBER.match(answer):
        raise ValueError(f"answer after '####' is not a number: {answer!r}")
    return answer


def gsm8k_solution(text: str) -> str:
    """Returns the worked solution of a GSM8K answer: the text before the last ``####``."""
    return text.rsplit("####", 1)[0].strip()


def parse_boxed(text: str) -> str:
    """Returns the stripped content of the last box in `text`; raises if missing or empty."""
    answer = last_boxed(text)
    if answer is None:
        raise ValueError("no \\boxed{...} answer")
    answer = answer.strip()
    if not answer:
        raise ValueError("empty \\boxed{} answer")
    return answer


def parse_integer(text: str | int) -> str:
    """Returns an integer answer in canonical form (no sign '+', no leading zeros)."""
    s = str(text).strip().replace(",", "")
    if re.fullmatch(r"[-+]?\d+(\.0*)?", s) is None:
        raise ValueError(f"not an integer: {s!r}")
    return str(int(s.split(".")[0]))


ANSWER_PARSERS: dict[str, Callable[[str], str]] = {
    "raw": parse_raw,
    "gsm8k": parse_gsm8k,
    "boxed": parse_boxed,
    "integer": parse_integer,
}
