"""GSM8K (Cobbe et al. 2021): 7,473 train / 1,319 test grade-school math word problems.

Source: the `openai/grade-school-math` JSONL files (``question``, ``answer``); the answer holds
the worked solution, then ``#### <number>``. Records: `prompt` = question, `answer` = the number
after ``####`` (commas removed), `solution` = the text before ``####`` (calculator annotations
``<<...>>`` kept), `source` = "gsm8k", `id` = ``gsm8k/<split>/<line>``.

Manual directory: ``train.jsonl`` and ``test.jsonl`` in the upstream format.
"""

from __future__ import annotations

from collections.abc import Iterator

import tensorflow_datasets as tfds

from r1jax.data.answers import gsm8k_solution, parse_gsm8k
from r1jax.data.builders.base import (
    R1Builder,
    convert_rows,
    find_file,
    manual_dir_or_none,
    missing_files_error,
)
from r1jax.data.files import iter_rows
from r1jax.data.records import BadRows, DataError, get_field, require_text

_BASE = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data"
URLS = {"train": f"{_BASE}/train.jsonl", "test": f"{_BASE}/test.jsonl"}


def gsm8k_record(row: dict, file: str, line: int, split: str) -> dict:
    """Converts one upstream GSM8K row into a schema record; raises DataError."""
    prompt = require_text(get_field(row, "question", file, line), "question", file, line)
    full = require_text(get_field(row, "answer", file, line), "answer", file, line)
    try:
        answer = parse_gsm8k(full)
    except ValueError as e:
        raise DataError(file, line, "answer", f"unparsable answer: {e}", full) from None
    return {
        "id": f"gsm8k/{split}/{line}",
        "prompt": prompt,
        "answer": answer,
        "source": "gsm8k",
        "solution": gsm8k_solution(full),
    }


class R1jaxGsm8k(R1Builder):
    """GSM8K grade-school math word problems (train/test)."""

    name = "r1jax_gsm8k"
    SOURCE = "gsm8k"
    HOMEPAGE = "https://github.com/openai/grade-school-math"

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        manual = manual_dir_or_none(dl_manager)
        if manual is None:
            paths = dl_manager.download(URLS)
        else:
            paths = {s: find_file(manual, [f"{s}.jsonl"]) for s in URLS}
            if None in paths.values():
                raise missing_files_error(manual, "train.jsonl and test.jsonl")
        return {s: self._generate_examples(split=s, path=str(p)) for s, p in paths.items()}

    def _records(self, split: str, bad: BadRows, path: str) -> Iterator[dict]:
        convert = lambda row, line: gsm8k_record(row, path, line, split)
        yield from convert_rows(iter_rows(path, bad, "jsonl"), convert, bad)
