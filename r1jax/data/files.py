"""Loader for the user's own JSONL or Parquet files, producing the r1jax record schema.

Usage::

    records = load_records(
        "my_data.jsonl",                                # or .parquet, a glob, or a list of paths
        field_map={"prompt": "question", "answer": "final"},
        source="math",                                  # reward family of these prompts
        answer_parser="raw",                            # or "gsm8k" | "boxed" | "integer"
        on_bad_row="skip",                              # or "fail"
    )
    len(records), records[0]["prompt"], records.bad_rows  # {"count": 2, "by_field": {...}, ...}

`field_map` maps schema keys (`prompt`, `answer`, `solution`, `id`, `source`, `numbers`,
`target`, `tests`, `language`) to column names; unmapped keys are looked up under their own
name. Rules:

- `prompt` is required and must be non-empty text.
- `answer` is required; `answer_parser` extracts the gold answer from it (e.g. map `answer` to a
  solution column with `answer_parser="boxed"`). If there is no answer but a `target`, the gold
  answer is ``str(target)`` (countdown-style files); a code row with `tests` and no answer
  gets ``""``, and so does a row of one of the `no_answer_sources` (in a run: the sources
  that `rewards.routes` gives no rule terms, e.g. general prompts for a reward model).
- `solution` defaults to "", `id` to ``"<file name>:<row>"``, `source` to the `source` argument.
- `numbers` (list of ints) and `target` (int) are kept when present, and so are the fields
  rewards read: `tests` (the `code_tests` reward's tests: Python source or a list of test
  statements) and `language` (the `language_consistency` reward's target language, e.g. "zh").

Rows are numbered from 1: the line number in a JSONL file (blank lines count, so the number is
the one an editor shows), the row number in a Parquet file. Parquet needs `pyarrow`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from r1jax import storage
from r1jax.config import ConfigError
from r1jax.data.answers import ANSWER_PARSERS
from r1jax.data.records import BadRows, DataError, get_field, require_int, require_text

SCHEMA_KEYS = (
    "id", "prompt", "answer", "solution", "source", "numbers", "target", "tests", "language"
)  # fmt: skip


class DataFileNotFoundError(FileNotFoundError):
    """A data file (or glob) that names nothing; callers prefix the config field."""


class RecordList(Sequence[dict]):
    """A random-access list of records plus the bad-row summary of the files they came from."""

    def __init__(self, records: list[dict], bad_rows: dict[str, Any]):
        self.records = records
        self.bad_rows = bad_rows

    @property
    def skipped(self) -> int:
        """Number of bad rows skipped while loading."""
        return int(self.bad_rows.get("count", 0))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | slice) -> dict | list[dict]:  # type: ignore[override]
        """Returns record `index`, or a list of records for a slice."""
        return self.records[index]

    def __repr__(self) -> str:
        return f"RecordList(len={len(self)}, skipped={self.skipped})"


def expand_paths(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expands a path, a glob pattern, or a list of them into existing file paths (sorted)."""
    items = [path] if isinstance(path, str | os.PathLike) else list(path)
    out: list[str] = []
    for item in items:
        item = os.fspath(item)
        matches = storage.glob(item) if storage.has_magic(item) else [item]
        if not matches or not all(storage.isfile(m) for m in matches):
            raise DataFileNotFoundError(f"data file not found: {item}")
        out.extend(matches)
    return out


def iter_rows(
    path: str, bad: BadRows, fmt: str | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(row_number, row_dict)`` of a JSONL or Parquet file; unreadable rows go to `bad`.

    `fmt` is "jsonl" or "parquet"; None infers it from the file name (downloads by tfds keep
    hashed names, so builders pass it explicitly).
    """
    if fmt is None:
        fmt = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}.get(
            os.path.splitext(path)[1]
        )
    if fmt not in ("jsonl", "parquet"):
        raise ConfigError(f"{path}: unsupported data file type (want .jsonl or .parquet)")
    if fmt == "parquet":
        yield from _iter_parquet(path)
        return
    with storage.path(path).open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                why = f"not UTF-8 text (byte {e.start}: {raw[e.start : e.start + 1]!r})"
                bad.handle(DataError(path, line_no, "<utf-8>", why, raw[:80]))
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                bad.handle(DataError(path, line_no, "<json>", f"invalid JSON ({e.msg})", line))
                continue
            if not isinstance(row, dict):
                bad.handle(DataError(path, line_no, "<json>", "row is not a JSON object", row))
                continue
            yield line_no, row


def _iter_parquet(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    import pyarrow as pa

    row_no = 0
    with storage.path(path).open("rb") as f:
        try:
            batches = pq.ParquetFile(f).iter_batches(batch_size=1024)
            for batch in batches:
                for row in batch.to_pylist():
                    row_no += 1
                    yield row_no, row
        except pa.ArrowException as e:
            raise DataError(path, row_no + 1, "<parquet>", f"not readable as Parquet ({e})") from e


def row_to_record(
    row: Mapping[str, Any],
    *,
    file: str,
    line: int,
    field_map: Mapping[str, str],
    source: str,
    answer_parser: str,
    no_answer_sources: Collection[str] = (),
) -> dict[str, Any]:
    """Turns one file row into a schema record (see module docstring); rows of
    ``no_answer_sources`` may lack an answer (it is then ""). Raises DataError."""
    col = {k: field_map.get(k, k) for k in SCHEMA_KEYS}
    record: dict[str, Any] = {
        "prompt": require_text(get_field(row, col["prompt"], file, line), col["prompt"], file, line)
    }
    if row.get(col["numbers"]) is not None:
        numbers = row[col["numbers"]]
        if isinstance(numbers, str | bytes) or not hasattr(numbers, "__iter__") or not numbers:
            raise DataError(
                file, line, col["numbers"], "expected a non-empty list of ints", numbers
            )
        record["numbers"] = [require_int(n, col["numbers"], file, line) for n in numbers]
    if row.get(col["target"]) is not None:
        record["target"] = require_int(row[col["target"]], col["target"], file, line)
    _add_reward_fields(record, row, col, file, line)
    if "source" in field_map:
        record["source"] = require_text(
            get_field(row, col["source"], file, line), col["source"], file, line
        )
    else:
        record["source"] = source
    no_answer = row.get(col["answer"]) is None or not str(row[col["answer"]]).strip()
    if "tests" in record and row.get(col["answer"]) is None:
        record["answer"] = ""  # a code row: judged by its tests
    elif no_answer and record["source"] in no_answer_sources:
        record["answer"] = ""  # a row no rule judges (e.g. a general prompt for the RM)
    elif row.get(col["answer"]) is not None or "target" not in record:
        raw = require_text(get_field(row, col["answer"], file, line), col["answer"], file, line)
        try:
            record["answer"] = ANSWER_PARSERS[answer_parser](raw)
        except ValueError as e:
            raise DataError(file, line, col["answer"], f"unparsable answer: {e}", raw) from None
    else:
        record["answer"] = str(record["target"])
    solution = row.get(col["solution"])
    record["solution"] = "" if solution is None else str(solution)
    row_id = row.get(col["id"])
    record["id"] = str(row_id) if row_id is not None else f"{os.path.basename(file)}:{line}"
    return record


def _add_reward_fields(
    record: dict[str, Any], row: Mapping[str, Any], col: Mapping[str, str], file: str, line: int
) -> None:
    """Copies the row's ``tests`` and ``language`` (those present) into ``record``, checked."""
    tests = row.get(col["tests"])
    if tests is not None:
        if isinstance(tests, tuple | list) and all(isinstance(t, str) for t in tests):
            tests = list(tests)
        elif not isinstance(tests, str):
            raise DataError(
                file, line, col["tests"], "expected Python source or a list of strings", tests
            )
        if not any(t.strip() for t in ([tests] if isinstance(tests, str) else tests)):
            raise DataError(file, line, col["tests"], "expected at least one test", tests)
        record["tests"] = tests
    language = row.get(col["language"])
    if language is not None:
        from r1jax.rewards.language import LANGUAGE_SCRIPTS  # only rows that name a language

        language = require_text(language, col["language"], file, line)
        if language not in LANGUAGE_SCRIPTS:
            why = f"unsupported language; use one of {sorted(LANGUAGE_SCRIPTS)}"
            raise DataError(file, line, col["language"], why, language)
        record["language"] = language


def load_records(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    field_map: Mapping[str, str] | None = None,
    source: str = "custom",
    answer_parser: str = "raw",
    on_bad_row: str = "skip",
    no_answer_sources: Collection[str] = (),
) -> RecordList:
    """Loads JSONL/Parquet file(s) into a `RecordList` of schema records.

    Args:
      path: a file, a glob pattern, or a list of them (.jsonl or .parquet).
      field_map: schema key -> column name, e.g. ``{"prompt": "question", "answer": "final"}``.
      source: value of the `source` field unless `field_map` maps `source` to a column.
      answer_parser: "raw", "gsm8k", "boxed" or "integer" (see `r1jax.data.answers`).
      on_bad_row: "skip" drops bad rows and counts them in `.bad_rows`; "fail" raises DataError.
      no_answer_sources: sources whose rows may have no answer (``answer`` ""): those that
        no rule reward judges, e.g. general prompts scored by a reward model only.

    Returns:
      RecordList with the good records in file order and `bad_rows` (count, by_field, examples).
    """
    field_map = dict(field_map or {})
    unknown = sorted(set(field_map) - set(SCHEMA_KEYS))
    if unknown:
        raise ValueError(f"field_map has unknown keys {unknown}; allowed: {list(SCHEMA_KEYS)}")
    if answer_parser not in ANSWER_PARSERS:
        raise ValueError(
            f"answer_parser must be one of {sorted(ANSWER_PARSERS)}, got {answer_parser!r}"
        )
    bad = BadRows(on_bad_row)
    records = []
    for file in expand_paths(path):
        for line, row in iter_rows(file, bad):
            try:
                records.append(
                    row_to_record(
                        row,
                        file=file,
                        line=line,
                        field_map=field_map,
                        source=source,
                        answer_parser=answer_parser,
                        no_answer_sources=frozenset(no_answer_sources),
                    )
                )
            except DataError as e:
                bad.handle(e)
    return RecordList(records, bad.as_dict())


def load_text_rows(
    path: str | Sequence[str],
    prompt_field: str,
    text_fields: Sequence[str],
    on_bad_row: str = "fail",
) -> tuple[list[tuple[dict[str, Any], tuple[str, ...]]], BadRows]:
    """``(row, texts)`` of JSONL/Parquet files: ``row`` is the file row with its
    ``prompt_field`` as stripped text under ``"prompt"`` (so a prompt template can format it),
    ``texts`` the ``text_fields`` as they are (leading spaces and newlines kept), e.g. an SFT
    completion, or the chosen and rejected responses of a preference pair.

    A row without one of the fields, or with an empty one, is a :class:`DataError` naming
    file, row and field (``on_bad_row="skip"`` counts it in the returned :class:`BadRows`
    instead).
    """
    bad = BadRows(on_bad_row)
    out = []
    for file in expand_paths(path):
        for line, row in iter_rows(file, bad):
            try:
                prompt = require_text(
                    get_field(row, prompt_field, file, line), prompt_field, file, line
                )
                texts = []
                for field in text_fields:
                    text = get_field(row, field, file, line)
                    if not isinstance(text, str) or not text.strip():
                        raise DataError(file, line, field, "expected non-empty text", text)
                    texts.append(text)
            except DataError as e:
                bad.handle(e)
                continue
            out.append((dict(row, prompt=prompt), tuple(texts)))
    return out, bad


def load_text_pairs(
    path: str | Sequence[str],
    first: str = "prompt",
    second: str = "completion",
    on_bad_row: str = "fail",
) -> tuple[list[tuple[dict[str, Any], str]], BadRows]:
    """``(row, text)`` pairs, e.g. SFT traces: :func:`load_text_rows` with one text field."""
    rows, bad = load_text_rows(path, first, (second,), on_bad_row)
    return [(row, texts[0]) for row, texts in rows], bad
