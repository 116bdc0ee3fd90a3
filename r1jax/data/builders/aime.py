"""AIME 2024 and AIME 2025 (American Invitational Mathematics Examination), 30 problems each.

Configs ``2024`` and ``2025``, split test. Answers are integers 0..999.

Sources (downloaded when no manual directory is given):
  - 2024: Hugging Face ``Maxwell-Jia/AIME_2024`` (``aime_2024_problems.parquet``: ``ID``,
    ``Problem``, ``Solution``, ``Answer``).
  - 2025: Hugging Face ``opencompass/AIME2025`` (``aime2025-I.jsonl``, ``aime2025-II.jsonl``:
    ``question``, ``answer``).

Manual directory: ``aime<year>.jsonl`` or ``aime<year>.parquet``, or the upstream file names.
Column names are matched loosely: problem/Problem/question, answer/Answer,
solution/Solution (optional), id/ID/problem_idx (optional).

Records: `prompt` = problem, `answer` = canonical integer string ("033" -> "33"), `solution`
= official solution or "", `source` = "aime", `year` = int, `id` = upstream id or
``aime<year>/<file>:<row>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from r1jax.data.answers import parse_integer
from r1jax.data.builders.base import R1Builder, find_file, manual_dir_or_none, missing_files_error
from r1jax.data.files import iter_rows
from r1jax.data.records import BadRows, DataError, get_field, require_text

_HF = "https://huggingface.co/datasets"
_AIME24 = f"{_HF}/Maxwell-Jia/AIME_2024/resolve/main/aime_2024_problems.parquet"
URLS = {
    2024: {"aime_2024_problems.parquet": _AIME24},
    2025: {
        "aime2025-I.jsonl": f"{_HF}/opencompass/AIME2025/resolve/main/aime2025-I.jsonl",
        "aime2025-II.jsonl": f"{_HF}/opencompass/AIME2025/resolve/main/aime2025-II.jsonl",
    },
}


def aime_record(row: dict, file: str, line: int, year: int) -> dict:
    """Converts one AIME row into a schema record; raises DataError."""
    names = ("problem", "Problem", "question", "Question")
    prompt = require_text(get_field(row, names, file, line), "problem", file, line)
    raw = get_field(row, ("answer", "Answer"), file, line)
    try:
        answer = parse_integer(raw)
    except ValueError as e:
        raise DataError(file, line, "answer", f"unparsable answer: {e}", raw) from None
    if not 0 <= int(answer) <= 999:
        raise DataError(file, line, "answer", "AIME answers are integers 0..999", raw)
    solution = row.get("solution", row.get("Solution"))
    row_id = next((row[k] for k in ("id", "ID", "problem_idx") if row.get(k) is not None), None)
    stem = os.path.splitext(os.path.basename(file))[0]
    return {
        "id": str(row_id) if row_id is not None else f"aime{year}/{stem}:{line}",
        "prompt": prompt,
        "answer": answer,
        "source": "aime",
        "solution": "" if solution is None else str(solution),
        "year": year,
    }


class R1jaxAime(R1Builder):
    """AIME 2024 / AIME 2025 problems with integer answers (test split)."""

    name = "r1jax_aime"
    SOURCE = "aime"
    HOMEPAGE = "https://artofproblemsolving.com/wiki/index.php/AIME_Problems_and_Solutions"
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="2024", description="AIME 2024 I and II"),
        tfds.core.BuilderConfig(name="2025", description="AIME 2025 I and II"),
    ]
    TASK_FEATURES = {"year": np.int32}

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        year = int(self.builder_config.name)
        manual = manual_dir_or_none(dl_manager)
        if manual is None:
            downloaded = dl_manager.download(URLS[year])
            files = [(str(downloaded[n]), n.rsplit(".", 1)[1]) for n in URLS[year]]
        else:
            single = find_file(manual, [f"aime{year}.jsonl", f"aime{year}.parquet"])
            paths = [single] if single else [find_file(manual, [n]) for n in URLS[year]]
            if None in paths:
                names = " or ".join([f"aime{year}.jsonl", f"aime{year}.parquet", *URLS[year]])
                raise missing_files_error(manual, names)
            files = [(str(p), str(p).rsplit(".", 1)[1]) for p in paths]
        return {"test": self._generate_examples(split="test", files=files, year=year)}

    def _records(
        self, split: str, bad: BadRows, files: list[tuple[str, str]], year: int
    ) -> Iterator[dict]:
        for path, fmt in files:
            for line, row in iter_rows(path, bad, fmt):
                try:
                    yield aime_record(row, path, line, year)
                except DataError as e:
                    bad.handle(e)
