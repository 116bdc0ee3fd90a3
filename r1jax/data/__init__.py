"""Datasets of r1jax: tfds builders, a JSONL/Parquet loader and checkpointable grain pipelines.

Typical use (the trainer's side)::

    from r1jax.data import PromptIterator, load_source

    src = load_source({"name": "gsm8k", "split": "train", "data_dir": "/data/tfds"})
    it = PromptIterator(src, batch_size=32, seed=0, process_index=jax.process_index(),
                        process_count=jax.process_count(), format_prompt=template)
    batch = next(it)  # list of 32 dicts: id, prompt, answer, source, solution, ..., text

Modules: `records` (schema, DataError, bad-row policy), `answers` (gold-answer parsers),
`files` (JSONL/Parquet), `countdown` (problem generator), `builders` (tfds builders),
`sources` (`load_source`), `pipeline` (grain, `PromptIterator`). See each module's docstring.
"""

from r1jax.data.countdown import CountdownSpec, generate_countdown
from r1jax.data.files import RecordList, load_records
from r1jax.data.pipeline import PromptIterator, identity_prompt, prompt_dataset
from r1jax.data.records import BadRows, DataError
from r1jax.data.sources import TfdsSource, load_source

__all__ = [
    "BadRows",
    "CountdownSpec",
    "DataError",
    "PromptIterator",
    "RecordList",
    "TfdsSource",
    "generate_countdown",
    "identity_prompt",
    "load_records",
    "load_source",
    "prompt_dataset",
]
