"""Answer extraction helpers shared by the reward functions.

All helpers take a completion string and return a substring (or ``None`` when
the construct is absent). They never raise on arbitrary text.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# a block holds no other opening tag: in "the <answer> tag ... <answer>x</answer>" the block is
# "x", not the text from the first mention on
_ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL)

THINK = "<think>"
"""The tag that opens the reasoning (R1's template)."""


def opens_think(prompt: str) -> bool:
    """Whether the model input ``prompt`` ends with ``<think>`` (``prompt.prefill``, or a
    chat template that opens the reasoning, as R1-Distill's does): its completions continue
    inside the reasoning block."""
    return prompt.rstrip().endswith(THINK)


def _balanced_group(text: str, start: int) -> int | None:
    """Index just past the ``}`` closing the ``{`` at ``text[start]``, or ``None``.

    Escaped braces (``\\{``, ``\\}``) do not count towards the nesting depth.
    """
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _box_content_at(text: str, pos: int, command: str) -> str | None:
    """Content of the box command starting at ``pos``, or ``None`` if malformed."""
    i = pos + len(command)
    if i < len(text) and (text[i].isalpha()):
        return None  # a longer command name such as ``\boxedx``
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        end = _balanced_group(text, i)
        return None if end is None else text[i + 1 : end - 1]
    if i > pos + len(command):  # ``\boxed 5``: one whitespace-delimited token
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``.

    Braces are matched with nesting (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``).
    ``\\boxed 5`` (no braces) gives ``5``. When the last box is unbalanced (a truncated
    completion), earlier boxes are tried. Returns ``None`` when no box is found.
    """
    positions = []
    for command in _BOX_COMMANDS:
        start = 0
        while True:
            p = text.find(command, start)
            if p < 0:
                break
            positions.append((p, command))
            start = p + 1
    for p, command in sorted(positions, reverse=True):
        content = _box_content_at(text, p, command)
        if content is not None:
            return content
    return None


def answer_block(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` block, or ``None`` if there is none."""
    matches = _ANSWER_RE.findall(text)
    return matches[-1] if matches else None


def think_block(text: str) -> str | None:
    """The reasoning part of a completion.

    * ``<think>X</think>`` -> ``X`` (first block);
    * ``X</think>`` with no opening tag (the template pre-filled ``<think>``) -> ``X``;
    * ``<think>X`` with no closing tag (a truncated completion) -> ``X``;
    * no tag at all -> ``None``.
    """
    open_pos = text.find(THINK)
    if open_pos >= 0:
        body_start = open_pos + len(THINK)
        close_pos = text.find("</think>", body_start)
        return text[body_start:] if close_pos < 0 else text[body_start:close_pos]
    close_pos = text.find("</think>")
    if close_pos >= 0:
        return text[:close_pos]
    return None
