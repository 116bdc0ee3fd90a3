"""The record schema shared by every r1jax dataset, and bad-row handling.

Every source (tfds builder, JSONL/Parquet file, generated countdown) yields plain Python dicts::

    {
      "id":       str,   # stable id, e.g. "gsm8k/test/17", "test/algebra/1.json", "data.jsonl:3"
      "prompt":   str,   # the question text, NOT templated (the trainer applies the template)
      "answer":   str,   # gold answer, non-empty ("72", "\\frac{1}{2}", "33"); "" for a
                         # code row judged by its tests
      "source":   str,   # task family used to pick the reward: "gsm8k", "math", "aime",
                         # "countdown", or whatever a user file declares
      "solution": str,   # worked solution if the dataset has one, else ""
      # task-specific keys, present only where they apply:
      "numbers":  list[int],  # countdown: the numbers to combine (each used once)
      "target":   int,        # countdown: the value to reach
      "level":    int,        # MATH: difficulty 1..5 (0 when the source says "Level ?")
      "type":     str,        # MATH: subject, e.g. "Algebra"
      "year":     int,        # AIME: contest year
      "tests":    str | list[str],  # code (files): the code_tests reward's tests
      "language": str,        # files: language_consistency's target language, e.g. "zh"
    }

Design decision: the tfds builders store task-specific fields as typed features (not a JSON
`extra` string), so `numbers` is a real int sequence on disk; `to_python` turns the
bytes/NumPy values a tfds data source returns into the plain types above.

Bad rows (missing field, empty prompt, empty or unparsable gold answer) raise `DataError`, which
names file, row (1-based line of a JSONL file / row of a Parquet file), field and a value
preview. `BadRows` applies the `on_bad_row` policy: ``"fail"`` re-raises, ``"skip"`` counts the
row (per field) so the caller can log the number as a metric.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

REQUIRED_KEYS = ("id", "prompt", "answer", "source", "solution")
ON_BAD_ROW = ("skip", "fail")


def preview(value: Any, limit: int = 80) -> str:
    """Returns a short printable preview of `value` for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DataError(ValueError):
    """A data row that cannot become a record. Names file, row, field and a value preview."""

    def __init__(self, file: str, row: int, field: str, reason: str, value: Any = None):
        self.file, self.row, self.field, self.reason, self.value = file, row, field, reason, value
        super().__init__(f"{file}, row {row}: field {field!r}: {reason} (value: {preview(value)})")


class BadRows:
    """Applies the `on_bad_row` policy and counts skipped rows.

    Attributes:
      policy: "skip" (count and drop the row) or "fail" (raise the `DataError`).
      count: number of rows skipped so far.
      by_field: skipped rows per offending field, e.g. ``{"answer": 2, "prompt": 1}``.
      examples: the first few error messages, for logs.
    """

    def __init__(self, policy: str = "skip", max_examples: int = 5):
        if policy not in ON_BAD_ROW:
            raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {policy!r}")
        self.policy = policy
        self.count = 0
        self.by_field: Counter[str] = Counter()
        self.examples: list[str] = []
        self._max_examples = max_examples

    def handle(self, error: DataError) -> None:
        """Raises `error` under policy "fail"; otherwise counts it and logs the first few."""
        if self.policy == "fail":
            raise error
        self.count += 1
        self.by_field[error.field] += 1
        if len(self.examples) < self._max_examples:
            self.examples.append(str(error))
            logging.warning("skipping bad row: %s", error)

    def as_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable summary: ``{"count", "by_field", "examples"}``."""
        return {"count": self.count, "by_field": dict(self.by_field), "examples": self.examples}


def get_field(row: Mapping[str, Any], names: str | tuple[str, ...], file: str, line: int) -> Any:
    """Returns the first of `names` present in `row` (None values count as missing).

    Raises:
      DataError: none of the names is present.
    """
    names = (names,) if isinstance(names, str) else names
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise DataError(file, line, names[0], "missing field", dict(row))


def require_text(value: Any, field: str, file: str, line: int) -> str:
    """Returns `value` as a stripped non-empty string; raises DataError otherwise."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise DataError(file, line, field, f"expected text, got {type(value).__name__}", value)
    text = str(value).strip()
    if not text:
        raise DataError(file, line, field, "empty", value)
    return text


def require_int(value: Any, field: str, file: str, line: int) -> int:
    """Returns `value` as an int (accepts ints, integral floats and digit strings)."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or not number.is_integer():
        raise DataError(file, line, field, "not an integer", value)
    return int(number)


def to_python(value: Any) -> Any:
    """Converts tfds/NumPy output to plain Python: bytes->str, NumPy scalars/arrays->int/list."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    return value
