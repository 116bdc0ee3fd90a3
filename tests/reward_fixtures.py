"""Misbehaving reward functions for the scorer tests.

They live in an importable module so that the scorer's worker processes (which get
functions by ``module:qualname``) can import them; importing registers them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from typing import Any

from r1jax.rewards import register_reward


@register_reward("fixture_length")
def length(completion: str, row: dict[str, Any]) -> float:
    """len(completion) (a well-behaved reward with an easy reference)."""
    return float(len(completion))


@register_reward("fixture_sleep_forever")
def sleep_forever(completion: str, row: dict[str, Any]) -> float:
    """Sleeps forever when the completion contains ``hang``, else returns 1."""
    while "hang" in completion:
        time.sleep(3600)
    return 1.0


@register_reward("fixture_c_hang")
def c_hang(completion: str, row: dict[str, Any]) -> float:
    """Spins inside one C call (no signal can interrupt it) when asked to ``hang``."""
    if "hang" in completion:
        return float(sum(range(10**15)))
    return 1.0


@register_reward("fixture_stubborn")
def stubborn(completion: str, row: dict[str, Any]) -> float:
    """Swallows every exception, the worker's timeout included, when asked to ``hang``."""
    while "hang" in completion:
        with contextlib.suppress(BaseException):
            time.sleep(3600)
    return 1.0


@register_reward("fixture_segfault")
def segfault(completion: str, row: dict[str, Any]) -> float:
    """Crashes the process with SIGSEGV on ``crash`` and reads address 0 on ``null``."""
    if "crash" in completion:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "null" in completion:
        ctypes.string_at(0)
    return 1.0


@register_reward("fixture_raises")
def raises(completion: str, row: dict[str, Any]) -> float:
    """Raises ValueError on ``boom``; returns NaN on ``nan``, a string on ``str``."""
    if "boom" in completion:
        raise ValueError("boom requested")
    if "nan" in completion:
        return float("nan")
    if "str" in completion:
        return "not a number"  # type: ignore[return-value]
    return 0.5


@register_reward("fixture_alloc")
def alloc(completion: str, row: dict[str, Any]) -> float:
    """Allocates 4 GiB on ``alloc`` (fails under a worker memory limit), else returns 1."""
    if "alloc" in completion:
        return float(len(bytearray(4 * 1024**3)))
    return 1.0


@register_reward("fixture_forge")
def forge(completion: str, row: dict[str, Any]) -> float:
    """Writes to its worker's result pipe (as a program a reward runs could, through
    /proc) a pickle that would create ``row["marker"]`` if the trainer unpickled it."""
    import pickle
    import struct
    import sys

    class Payload:
        def __reduce__(self):
            return (open, (row["marker"], "w"))

    data = pickle.dumps(("ready", 0)) if row.get("plain") else pickle.dumps(Payload())
    os.write(int(sys.argv[2]), struct.pack("!i", len(data)) + data)
    return 0.5


_SERVED: list[str] = []


@register_reward("fixture_served")
def served(completion: str, row: dict[str, Any]) -> float:
    """How many calls this process has served, this one included (a reward that keeps state
    in its worker, as a leaking cache does)."""
    _SERVED.append(completion)
    return float(len(_SERVED))


def scaled(completion: str, row: dict[str, Any], factor: float = 1.0) -> float:
    """Unregistered reward reached by ``"reward_fixtures:scaled"``: factor * len(row['x'])."""
    return factor * len(row["x"])
