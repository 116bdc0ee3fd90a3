"""grain pipelines from a random-access record source to batches of prompt records.

Pipeline (all `grain.MapDataset` steps, so every position is addressable and resumable)::

    source -> shuffle(seed) -> repeat(num_epochs | forever) -> drop the tail that does not fill
    a global batch -> batch(batch_size) as a list of dicts -> shard: keep batches
    process_index, process_index + process_count, ... -> map: record + {"text": ...}

- Shuffling is global and differs per epoch (grain folds the epoch into the seed); the user seed
  is first mixed through `np.random.SeedSequence`, so seeds s and s+1 give unrelated orders.
- Sharding cuts one global stream into contiguous blocks: at step k process p gets global
  elements ``[k*B*P + p*B, k*B*P + (p+1)*B)`` (B = per-process batch, P = process count), so
  the concatenation of the per-process batches in process order is the batch one process
  would read with ``batch_size=B*P`` (the rows of a global array fed process by process),
  every process gets the same number of batches and the processes partition the data.
  `process_index` / `process_count` are plain ints (pass ``jax.process_index()`` /
  ``jax.process_count()``), so sharding is testable without `jax.distributed`.
- A batch is a Python list of `batch_size` record dicts (strings stay strings for the
  tokenizer), each with the added `text` field.

Checkpointing: `PromptIterator` is a `grain.DatasetIterator`; ``get_state()`` returns a
JSON-serialisable dict ``{"fingerprint": {...pipeline parameters...}, "grain": {...}}`` and
``set_state`` refuses a state whose fingerprint differs. Save it with Orbax through grain's
handler (one JSON file per process)::

    mngr = ocp.CheckpointManager(directory)
    mngr.save(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it), ...))
    mngr.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it), ...))

or store ``json.dumps(it.get_state())`` anywhere and call ``it.set_state(json.loads(...))``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np


def identity_prompt(record: dict[str, Any]) -> str:
    """The default `format_prompt`: the untemplated question text."""
    return record["prompt"]


def _add_text(record: dict[str, Any], format_prompt: Callable[[dict], str]) -> dict[str, Any]:
    text = format_prompt(record)
    if not isinstance(text, str):
        raise TypeError(
            f"format_prompt must return str, got {type(text).__name__} for record "
            f"{record.get('id', '?')!r}"
        )
    return {**record, "text": text}


def _add_text_batch(
    batch: list[dict[str, Any]], format_prompt: Callable[[dict], str]
) -> list[dict[str, Any]]:
    return [_add_text(r, format_prompt) for r in batch]


def shuffle_seed(seed: int) -> int:
    """Maps a user seed to grain's 32-bit shuffle seed (decorrelates neighbouring seeds)."""
    return int(np.random.SeedSequence(int(seed)).generate_state(1)[0])


def prompt_dataset(
    source: Sequence[dict],
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    format_prompt: Callable[[dict], str] = identity_prompt,
) -> grain.MapDataset:
    """Builds the batched `grain.MapDataset` described in the module docstring.

    Args:
      source: random-access records (`load_source` output, a list of dicts, ...).
      batch_size: records per batch on this process (the global batch is
        ``batch_size * process_count``).
      seed: shuffle seed; the same seed gives the same order on every process.
      shuffle: False keeps source order (evaluation).
      num_epochs: passes over the data; None repeats forever.
      process_index, process_count: this process's shard (``jax.process_index()``, ...).
      format_prompt: record -> model input text, stored as the record's `text`.

    Returns:
      MapDataset whose elements are lists of `batch_size` record dicts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"need 0 <= process_index < process_count, got {process_index}, {process_count}"
        )
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None (forever), got {num_epochs}")
    if len(source) == 0:
        raise ValueError("the data source is empty")
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=shuffle_seed(seed))
    ds = ds.repeat(num_epochs)
    global_batch = batch_size * process_count
    if num_epochs is not None:
        usable = len(ds) - len(ds) % global_batch
        if usable == 0:
            raise ValueError(
                f"{len(source)} records x {num_epochs} epochs do not fill one global batch of "
                f"{global_batch} (batch_size={batch_size} x process_count={process_count})"
            )
        ds = ds[:usable]
    # Per-process batches of B consecutive records; global batch k is made of the P per-process
    # batches k*P .. k*P + P - 1, and process p takes the p-th of them.
    ds = ds.batch(batch_size, drop_remainder=True, batch_fn=list)
    ds = ds[process_index::process_count]
    return ds.map(functools.partial(_add_text_batch, format_prompt=format_prompt))


class PromptIterator(grain.DatasetIterator):
    """Checkpointable iterator over batches (lists of record dicts with a `text` field).

    Usage::

        it = PromptIterator(load_source(cfg), batch_size=32, seed=0,
                            process_index=jax.process_index(), process_count=jax.process_count(),
                            format_prompt=r1_zero_template)
        batch = next(it)          # [{"prompt", "answer", ..., "text"}, ...] of length 32
        state = it.get_state()    # JSON-serialisable dict
        it2 = PromptIterator(...same arguments...); it2.set_state(state)  # continues identically

    `num_batches` is the number of batches per process (None when repeating forever).
    `read_options` controls grain's reader threads; the default (2 threads, 8 batches ahead)
    keeps memory small, since a batch of strings is cheap next to a training step.
    """

    _closed = True  # until grain's __init__ runs, so __del__ of a half-built iterator is a no-op

    def __init__(
        self,
        source: Sequence[dict],
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
        format_prompt: Callable[[dict], str] = identity_prompt,
        read_options: grain.ReadOptions | None = None,
    ):
        ds = prompt_dataset(
            source,
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            num_epochs=num_epochs,
            process_index=process_index,
            process_count=process_count,
            format_prompt=format_prompt,
        )
        read_options = read_options or grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)
        inner = iter(ds.to_iter_dataset(read_options))
        super().__init__(inner)
        self._inner = inner
        self.num_batches = len(ds) if num_epochs is not None else None
        self.fingerprint = {
            "num_records": len(source),
            "batch_size": batch_size,
            "seed": seed,
            "shuffle": shuffle,
            "num_epochs": num_epochs,
            "process_index": process_index,
            "process_count": process_count,
        }

    def __next__(self) -> list[dict[str, Any]]:
        return next(self._inner)

    def get_state(self) -> dict[str, Any]:
        """Returns ``{"fingerprint": pipeline parameters, "grain": grain iterator state}``."""
        return {"fingerprint": dict(self.fingerprint), "grain": self._inner.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a state from `get_state`; raises ValueError if it came from another pipeline."""
        saved = state.get("fingerprint", {})
        diff = {k: (saved.get(k), v) for k, v in self.fingerprint.items() if saved.get(k) != v}
        if diff:
            raise ValueError(
                f"data iterator state is from a different pipeline: (saved, now) {diff}"
            )
        self._inner.set_state(state["grain"])
