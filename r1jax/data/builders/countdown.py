"""Countdown (TinyZero style) as a tfds builder: problems generated from a seed, no download.

The problems come from `r1jax.data.countdown.generate_countdown`; the train split excludes every
(numbers, target) pair of the test split. Features: the common schema plus `numbers`
(int64 sequence) and `target` (int64).

Each parameter set is its own builder config, named by its values so different sets never share
a directory::

    config = countdown_config(seed=0, train_size=1000, test_size=100, max_numbers=3)
    builder = R1jaxCountdown(config=config, data_dir=...)
    # or tfds.data_source("r1jax_countdown", builder_kwargs={"config": config}, ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from r1jax.data.builders.base import R1Builder
from r1jax.data.countdown import CountdownSpec, generate_countdown, problem_key
from r1jax.data.records import BadRows


@dataclasses.dataclass(eq=False)
class CountdownConfig(tfds.core.BuilderConfig):
    """Builder config: the `CountdownSpec` fields plus split sizes."""

    spec: CountdownSpec = dataclasses.field(default_factory=CountdownSpec)
    train_size: int = 100_000
    test_size: int = 1_000


_CONFIGS: dict[str, CountdownConfig] = {}


def countdown_config(
    train_size: int = 100_000, test_size: int = 1_000, **spec: Any
) -> CountdownConfig:
    """Returns the config for these parameters; `spec` takes the `CountdownSpec` fields. The
    same parameters give the same object: tfds refuses a config named like a registered one
    (the default's) unless it is that very object."""
    unknown = sorted(set(spec) - {f.name for f in dataclasses.fields(CountdownSpec)})
    if unknown:
        raise ValueError(f"unknown countdown options {unknown}")
    if train_size < 0 or test_size < 0:
        raise ValueError(f"split sizes must be >= 0, got train={train_size} test={test_size}")
    s = CountdownSpec(**spec)
    name = (
        f"seed{s.seed}_n{s.min_numbers}-{s.max_numbers}_v{s.min_value}-{s.max_value}"
        f"_t{s.min_target}-{s.max_target}_train{train_size}_test{test_size}"
    )
    if name not in _CONFIGS:
        _CONFIGS[name] = CountdownConfig(
            name=name, spec=s, train_size=train_size, test_size=test_size
        )
    return _CONFIGS[name]


class R1jaxCountdown(R1Builder):
    """Countdown arithmetic puzzles generated deterministically from a seed (train/test)."""

    name = "r1jax_countdown"
    SOURCE = "countdown"
    HOMEPAGE = "https://github.com/Jiayi-Pan/TinyZero"
    BUILDER_CONFIGS = [countdown_config()]
    TASK_FEATURES = {"numbers": tfds.features.Sequence(np.int64), "target": np.int64}

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # nothing to download
        return {
            "train": self._generate_examples(split="train"),
            "test": self._generate_examples(split="test"),
        }

    def _records(self, split: str, bad: BadRows) -> Iterator[dict]:
        del bad  # generated records are valid by construction
        cfg = self.builder_config
        if split == "test":
            yield from generate_countdown(cfg.spec, "test", cfg.test_size)
            return
        test = generate_countdown(cfg.spec, "test", cfg.test_size)
        exclude = {problem_key(r["numbers"], r["target"]) for r in test}
        yield from generate_countdown(cfg.spec, "train", cfg.train_size, exclude)
