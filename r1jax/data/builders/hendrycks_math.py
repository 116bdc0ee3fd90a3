"""MATH (Hendrycks et al. 2021) and its MATH-500 test subset (Lightman et al. 2023).

Configs:
  - ``full``: the 12.5k problems, splits train (7,500) / test (5,000). Each upstream problem is
    a JSON file ``MATH/<split>/<subject>/<n>.json`` with ``problem``, ``level`` ("Level 3"),
    ``type`` ("Algebra"), ``solution``.
  - ``math500``: split test, the 500 problems of OpenAI's ``prm800k/math_splits/test.jsonl``
    (``problem``, ``solution``, ``answer``, ``subject``, ``level``, ``unique_id``). A list that
    holds only ``unique_id`` values (``"test/algebra/1.json"``) is joined against the full MATH
    test split, so a plain id list also works.

Records: `prompt` = problem, `solution` = the worked solution, `answer` = the row's ``answer``
if given, else the content of the last ``\\boxed{}`` of the solution (rows without one are bad
rows), `level` = int 1..5 (0 for "Level ?"), `type` = subject, `source` = "math",
`id` = ``<split>/<subject>/<n>.json`` (MATH-500's unique_id convention).

Manual directory: ``full`` reads the extracted tarball (``MATH/train``, ``MATH/test``; or
``train/`` and ``test/`` directly) or ``train.jsonl`` / ``test.jsonl`` with the same fields;
``math500`` reads ``math500.jsonl`` (plus the full test split when rows lack ``problem``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from r1jax.data.answers import parse_boxed, parse_raw
from r1jax.data.builders.base import (
    R1Builder,
    find_file,
    manual_dir_or_none,
    missing_files_error,
)
from r1jax.data.files import iter_rows
from r1jax.data.records import BadRows, DataError, get_field, require_text

MATH_URL = "https://people.eecs.berkeley.edu/~hendrycks/MATH.tar"
MATH500_URL = "https://github.com/openai/prm800k/raw/main/prm800k/math_splits/test.jsonl"


def parse_level(value: object) -> int:
    """Returns the difficulty as an int: "Level 3" -> 3, 4 -> 4, "Level ?" / None -> 0."""
    match = re.search(r"\d+", str(value)) if value is not None else None
    return int(match.group()) if match else 0


def math_record(row: dict, file: str, line: int, record_id: str) -> dict:
    """Converts one MATH / MATH-500 row into a schema record; raises DataError."""
    prompt = require_text(get_field(row, "problem", file, line), "problem", file, line)
    solution = require_text(get_field(row, "solution", file, line), "solution", file, line)
    field, text, parse = (
        ("answer", row["answer"], parse_raw)
        if row.get("answer") is not None
        else ("solution", solution, parse_boxed)
    )
    try:
        answer = parse(str(text))
    except ValueError as e:
        raise DataError(file, line, field, f"unparsable answer: {e}", text) from None
    return {
        "id": record_id,
        "prompt": prompt,
        "answer": answer,
        "source": "math",
        "solution": solution,
        "level": parse_level(row.get("level")),
        "type": str(row.get("type") or row.get("subject") or ""),
    }


def iter_math_split(root: epath.Path, split: str, bad: BadRows) -> Iterator[tuple[str, int, dict]]:
    """Yields ``(file, row_number, row)`` of one MATH split from a tree or a JSONL file."""
    for tree in (root / "MATH" / split, root / split):
        if tree.is_dir():
            for path in sorted(tree.glob("*/*.json")):
                try:
                    row = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as e:
                    bad.handle(DataError(str(path), 1, "<json>", f"invalid JSON ({e.msg})"))
                    continue
                row.setdefault("unique_id", f"{split}/{path.parent.name}/{path.name}")
                yield str(path), 1, row
            return
    jsonl = find_file(root, [f"{split}.jsonl"])
    if jsonl is None:
        raise missing_files_error(root, f"MATH/{split}/<subject>/*.json or {split}.jsonl")
    for line, row in iter_rows(str(jsonl), bad, "jsonl"):
        row.setdefault("unique_id", f"{split}/{line}")
        yield str(jsonl), line, row


class R1jaxMath(R1Builder):
    """MATH competition problems (full 12.5k train/test, or the MATH-500 test subset)."""

    name = "r1jax_math"
    SOURCE = "math"
    HOMEPAGE = "https://github.com/hendrycks/math"
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="full", description="MATH train 7.5k / test 5k"),
        tfds.core.BuilderConfig(name="math500", description="MATH-500 test subset (prm800k)"),
    ]
    TASK_FEATURES = {"level": np.int32, "type": tfds.features.Text()}

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        manual = manual_dir_or_none(dl_manager)
        if self.builder_config.name == "full":
            root = manual or epath.Path(dl_manager.download_and_extract(MATH_URL))
            return {s: self._generate_examples(split=s, root=root) for s in ("train", "test")}
        if manual is None:
            listing = epath.Path(dl_manager.download(MATH500_URL))
        else:
            listing = find_file(manual, ["math500.jsonl"])
            if listing is None:
                raise missing_files_error(manual, "math500.jsonl")
        # The full test split is only needed (and downloaded) for id-only listings.
        full_root = lambda: manual or epath.Path(dl_manager.download_and_extract(MATH_URL))
        return {"test": self._generate_examples(split="test", listing=listing, full_root=full_root)}

    def _records(
        self,
        split: str,
        bad: BadRows,
        root: epath.Path | None = None,
        listing: epath.Path | None = None,
        full_root: Callable[[], epath.Path] | None = None,
    ) -> Iterator[dict]:
        if listing is None:
            rows = iter_math_split(root, split, bad)
        else:
            rows = iter_listed_rows(listing, full_root, bad)
        for file, line, row in rows:
            try:
                yield math_record(row, file, line, row["unique_id"])
            except DataError as e:
                bad.handle(e)


def iter_listed_rows(
    listing: epath.Path, full_root: Callable[[], epath.Path], bad: BadRows
) -> Iterator[tuple[str, int, dict]]:
    """Yields the rows of a MATH-500 style listing, joining id-only rows with the MATH test set."""
    full: dict[str, dict] | None = None
    for line, row in iter_rows(str(listing), bad, "jsonl"):
        uid = row.get("unique_id")
        if row.get("problem") is None and uid is not None:
            if full is None:
                full = {r["unique_id"]: r for _, _, r in iter_math_split(full_root(), "test", bad)}
            if uid not in full:
                bad.handle(
                    DataError(str(listing), line, "unique_id", "not in the MATH test set", uid)
                )
                continue
            row = {**full[uid], **row}
        row.setdefault("unique_id", f"test/{line}")
        yield str(listing), line, row
