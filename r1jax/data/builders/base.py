"""Common base of the r1jax tfds builders.

Every builder writes `array_record` files (the default here), so the data is read back with
``tfds.data_source(...)`` / ``builder.as_data_source()`` without TensorFlow: tfds 4.9's
array_record writer and its NumPy example (de)serialiser need no TF. The features are the record
schema of `r1jax.data.records` (`id`, `prompt`, `answer`, `source`, `solution` as text) plus
each builder's typed task fields. Rows that fail validation are skipped (default) or raise
`DataError` (``on_bad_row="fail"`` builder kwarg); skip counts per split are stored in the
dataset's ``metadata.json`` under ``bad_rows`` and reach callers through `load_source`.

Input files: a builder first looks in the manual directory (``DownloadConfig(manual_dir=...)``,
default ``<data_dir>/downloads/manual``); if that directory is missing or empty it downloads the
public source with `dl_manager`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from r1jax.data.records import BadRows, DataError

COMMON_FEATURES = ("id", "prompt", "answer", "source", "solution")


class R1Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder: shared schema, bad-row policy, manual-dir lookup, array_record output.

    Subclasses set `SOURCE`, `HOMEPAGE`, `TASK_FEATURES` and implement `_split_generators` and
    `_records(split, bad, **kwargs)`, which yields schema dicts and passes `DataError`s to `bad`.
    """

    VERSION = tfds.core.Version("1.0.0")
    SOURCE = ""
    HOMEPAGE = ""
    TASK_FEATURES: dict[str, Any] = {}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the source files (see the builder docstring) here."

    def __init__(self, *, on_bad_row: str = "skip", file_format: str = "array_record", **kwargs):
        BadRows(on_bad_row)  # validates the policy name early
        self._on_bad_row = on_bad_row
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {k: tfds.features.Text() for k in COMMON_FEATURES}
        features.update(self.TASK_FEATURES)
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip().split("\n")[0],
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _generate_examples(self, split: str, **kwargs: Any) -> Iterator[tuple[str, dict]]:
        """Yields ``(key, record)`` and records the split's bad-row summary in the metadata.

        The key (row counter + id) is unique even if a source repeats an id; tfds orders the
        stored examples by a hash of it.
        """
        bad = BadRows(self._on_bad_row)
        for n, record in enumerate(self._records(split, bad, **kwargs)):
            yield f"{n}:{record['id']}", record
        self.info.metadata.setdefault("bad_rows", {})[split] = bad.as_dict()

    def _records(self, split: str, bad: BadRows, **kwargs: Any) -> Iterator[dict]:
        raise NotImplementedError


def manual_dir_or_none(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
    """Returns the manual directory if one is configured and non-empty, else None."""
    try:
        return epath.Path(dl_manager.manual_dir)
    except AssertionError:
        return None


def find_file(directory: epath.Path, candidates: Iterable[str]) -> epath.Path | None:
    """Returns the first of `candidates` that exists in `directory`, or None."""
    for name in candidates:
        if (directory / name).is_file():
            return directory / name
    return None


def missing_files_error(directory: epath.Path, expected: str) -> FileNotFoundError:
    """Builds the error for a manual directory that lacks the expected files."""
    found = sorted(os.listdir(directory))[:20]
    return FileNotFoundError(f"manual_dir {directory} must contain {expected}; it has {found}")


def convert_rows(
    rows: Iterable[tuple[int, dict]],
    convert: Callable[[dict, int], dict],
    bad: BadRows,
) -> Iterator[dict]:
    """Applies `convert(row, row_number)` to each row; rows raising DataError go to `bad`."""
    for line, row in rows:
        try:
            yield convert(row, line)
        except DataError as e:
            bad.handle(e)
