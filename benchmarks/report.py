"""Printing a benchmark's result lines and saving them under ``benchmarks/results/``."""

from __future__ import annotations

import os


def emit(lines: list[str], out: str = "", append: bool = False) -> None:
    """Prints ``lines`` and, with ``out``, writes them there (``append``: after what is there,
    one blank line between)."""
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if not out:
        return
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "a" if append else "w") as f:
        f.write(("\n" if append and os.path.getsize(out) else "") + text)
