"""The allowed ranges of the config's plain numeric fields, checked by
:func:`r1jax.config.validate` with the field and the value named (a value out of range would
otherwise run: a negative learning rate ascends, ``b1 >= 1`` diverges, a negative warmup
is ignored, ``ref_update_every=-1`` resets the reference every step)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections

from r1jax.model.config import DTYPES


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f"must be >= {low}"


_POSITIVE = ((lambda v: v > 0), "must be > 0")
_FRACTION = ((lambda v: 0 <= v < 1), "must be in [0, 1)")

# field -> (test, why); fields of cold_start only when a cold_start.task is set
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lora.rank": ((lambda v: v >= 0), "must be >= 0 (0: no adapters, train every weight)"),
    "lora.alpha": _POSITIVE,
    "optim.b1": _FRACTION,
    "optim.b2": _FRACTION,
    "optim.warmup_steps": _at_least(0),
    "optim.weight_decay": _at_least(0),
    "optim.grad_clip": ((lambda v: v >= 0), "must be >= 0 (0: no clipping)"),
    "optim.max_bad_steps": _at_least(1),
    "rl.ref_update_every": ((lambda v: v >= 0), "must be >= 0 (0: never)"),
    "rl.max_refill_rounds": _at_least(0),
    "rl.logprob_chunk": _at_least(1),
    "sampling.max_prompt_len": _at_least(1),
    "sampling.cache_dtype": ((lambda v: v in ("", *DTYPES)), f"one of {('', *DTYPES)}"),
    "rewards.timeout_s": _POSITIVE,
    "rewards.num_workers": ((lambda v: v >= 0), "must be >= 0 (0: in this process)"),
    "rewards.worker_memory_mb": ((lambda v: v >= 0), "must be >= 0 (0: no limit)"),
    "rewards.worker_max_calls": ((lambda v: v >= 0), "must be >= 0 (0: never replaced)"),
    "cold_start.lr": _POSITIVE,
    "cold_start.weight_decay": _at_least(0),
    "cold_start.examples": _at_least(1),
    "cold_start.max_len": ((lambda v: v >= 0), "must be >= 0 (0: automatic)"),
}


def out_of_range(c: ml_collections.ConfigDict) -> tuple[str, Any, str] | None:
    """``(field, value, why)`` of the first field of :data:`RANGES` out of its range."""
    for field, (ok, why) in RANGES.items():
        section, name = field.split(".")
        if section == "cold_start" and not c.cold_start.task:
            continue
        value = c[section][name]
        if not ok(value):
            return field, value, why
    countdown = c.data.countdown
    for lo, hi in (("min_numbers", "max_numbers"), ("min_value", "max_value"),
                   ("min_target", "max_target")):  # fmt: skip
        if c.data.name == "countdown" and not 1 <= countdown[lo] <= countdown[hi]:
            return f"data.countdown.{lo}", countdown[lo], f"must be in [1, {hi}={countdown[hi]}]"
    return None
