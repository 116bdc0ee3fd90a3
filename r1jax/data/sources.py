"""`load_source(cfg)`: one entry that turns a small dataset config into a random-access source.

Config keys (a dict or an `ml_collections.ConfigDict`)::

    name:          "gsm8k" | "math" | "math500" | "aime2024" | "aime2025" | "countdown"
                   | "jsonl" | "parquet"
    split:         tfds split (default "train"; "test" for math500/aime), slices like
                   "train[:100]" work
    data_dir:      tfds data directory (default: tfds's, ~/tensorflow_datasets)
    manual_dir:    directory holding the source files instead of downloading them
    download:      prepare the tfds dataset if it is missing (default True)
    countdown:     countdown options, e.g. {"seed": 0, "train_size": 1000, "max_numbers": 3}
    path:          jsonl/parquet: file, glob or list of files
    field_map:     jsonl/parquet: schema key -> column, e.g. {"prompt": "question"}; the keys
                   are those of `r1jax.data.files` (tests and language included)
    source:        jsonl/parquet: value of the records' `source` field (default "custom")
    answer_parser: jsonl/parquet: "raw" | "gsm8k" | "boxed" | "integer"
    no_answer_sources: jsonl/parquet: sources whose rows may have no answer (see
                   `r1jax.data.files`)
    on_bad_row:    "skip" (default) or "fail"; for tfds datasets it applies when the split is
                   built (a prepared dataset keeps the skip counts of its build)

The result supports ``len(src)`` and ``src[i]`` -> a record dict of plain Python values (schema
in `r1jax.data.records`), and ``src.bad_rows`` / ``src.skipped`` (bad rows skipped while the data
was built or loaded, for metrics). Example::

    src = load_source({"name": "gsm8k", "split": "test", "data_dir": "/data/tfds"})
    src[0]  # {"id": "gsm8k/test/..", "prompt": "...", "answer": "18", "source": "gsm8k", ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from r1jax.config import ConfigError
from r1jax.data.builders import BUILDERS, countdown_config
from r1jax.data.files import load_records
from r1jax.data.records import ON_BAD_ROW, to_python

CONFIG_KEYS = (
    "name",
    "split",
    "data_dir",
    "manual_dir",
    "download",
    "countdown",
    "path",
    "field_map",
    "source",
    "answer_parser",
    "no_answer_sources",
    "on_bad_row",
)
FILE_KEYS = ("path", "field_map", "source", "answer_parser", "no_answer_sources")
TFDS_KEYS = ("data_dir", "manual_dir", "download", "countdown")


class TfdsSource(Sequence[dict]):
    """Wraps a tfds data source: records come back as plain Python dicts (str, int, list)."""

    def __init__(self, data_source: Any, bad_rows: Mapping[str, Any]):
        self.data_source = data_source
        self.bad_rows = dict(bad_rows)

    @property
    def skipped(self) -> int:
        """Number of bad rows skipped when the split was built."""
        return int(self.bad_rows.get("count", 0))

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int | slice) -> dict | list[dict]:  # type: ignore[override]
        """Returns record `index` (negative indices count from the end) or a list for a slice."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"record index {index} out of range for {n} records")
        return to_python(self.data_source[index % n])

    def __repr__(self) -> str:
        return f"TfdsSource({self.data_source!r}, skipped={self.skipped})"


def _plain(cfg: Any) -> dict[str, Any]:
    """Returns a ConfigDict / Mapping as a plain dict."""
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def load_source(cfg: Mapping[str, Any] | Any) -> Sequence[dict]:
    """Builds the random-access record source named by `cfg` (see module docstring).

    Returns:
      a `TfdsSource` (tfds datasets) or `RecordList` (jsonl/parquet); both have `bad_rows`.

    Raises:
      ConfigError (a ValueError): unknown name or key, or a key that does not apply to the
        named dataset.
    """
    cfg = {k: v for k, v in _plain(cfg).items() if v is not None}
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"data config: unknown keys {unknown}; allowed: {list(CONFIG_KEYS)}")
    name = cfg.get("name")
    on_bad_row = cfg.get("on_bad_row", "skip")
    if on_bad_row not in ON_BAD_ROW:
        raise ConfigError(f"data config: on_bad_row={on_bad_row!r}: one of {list(ON_BAD_ROW)}")
    if name in ("jsonl", "parquet"):
        _reject(cfg, name, TFDS_KEYS + ("split",))
        if "path" not in cfg:
            raise ConfigError(f"data config: name={name!r} needs 'path'")
        paths = [cfg["path"]] if isinstance(cfg["path"], str) else list(cfg["path"])
        wrong = [p for p in paths if not str(p).endswith(f".{name}")]
        if wrong:
            raise ConfigError(f"data config: name={name!r} but path(s) {wrong} are not .{name}")
        records = load_records(
            paths,
            field_map=_plain(cfg.get("field_map", {})),
            source=cfg.get("source", "custom"),
            answer_parser=cfg.get("answer_parser", "raw"),
            on_bad_row=on_bad_row,
            no_answer_sources=cfg.get("no_answer_sources", ()),
        )
        if len(records) == 0:
            raise ConfigError(
                f"data config: path {cfg['path']!r} holds no usable rows "
                f"({records.skipped} bad rows skipped)"
            )
        return records
    if name not in BUILDERS:
        raise ConfigError(
            f"data config: unknown name {name!r}; known: {[*BUILDERS, 'jsonl', 'parquet']}"
        )
    _reject(cfg, name, FILE_KEYS + (() if name == "countdown" else ("countdown",)))
    tfds_name, config, default_split = BUILDERS[name]
    if name == "countdown":
        config = countdown_config(**_plain(cfg.get("countdown", {})))
    split = cfg.get("split", default_split)
    builder_kwargs = {"on_bad_row": on_bad_row}
    if config is not None:
        builder_kwargs["config"] = config
    download_config = tfds.download.DownloadConfig(manual_dir=cfg.get("manual_dir"))
    try:
        ds = tfds.data_source(
            tfds_name,
            split=split,
            data_dir=cfg.get("data_dir"),
            download=cfg.get("download", True),
            builder_kwargs=builder_kwargs,
            download_and_prepare_kwargs={"download_config": download_config},
        )
    except OSError as e:  # no network (requests/urllib errors are OSErrors), unreadable dir
        if isinstance(e, FileNotFoundError) and "manual_dir" in str(e):
            raise  # a builder's own message: names the directory and the files it needs
        where = cfg.get("data_dir") or "tfds's default data_dir"
        raise FileNotFoundError(
            f"data name={name!r}: loading or preparing the dataset in {where} failed "
            f"({type(e).__name__}: {str(e)[:200]}). Without internet access, put its source "
            "files in data.manual_dir (default <data_dir>/downloads/manual), or prepare it "
            "where there is access and copy data_dir over."
        ) from e
    except ValueError as e:  # tfds: "Unknown split 'x'. Should be one of [...]"
        if "split" not in str(e).lower():
            raise
        raise ConfigError(f"data name={name!r} split={split!r}: {e}") from None
    metadata = ds.dataset_info.metadata or {}
    bad_rows = metadata.get("bad_rows", {}).get(split.split("[")[0], {"count": 0})
    return TfdsSource(ds, bad_rows)


def _reject(cfg: Mapping[str, Any], name: str, keys: Sequence[str]) -> None:
    """Raises if `cfg` sets any of `keys`, which do not apply to dataset `name`."""
    bad = [k for k in keys if k in cfg]
    if bad:
        raise ConfigError(f"data config: keys {bad} do not apply to name={name!r}")
