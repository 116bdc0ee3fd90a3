"""Reward worker process: ``python -m r1jax.rewards._worker <task_fd> <result_fd> <config>``.

Started by :class:`r1jax.rewards.pool.WorkerPool` with fork+exec (never a bare fork of
the JAX parent). Receives ``("run", [(call_id, ref, completion, row, kwargs, timeout_s),
...])`` chunks, answers one ``(call_id, status, value, message)`` tuple per call in
order, with ``status`` in ``ok``/``error``/``timeout``. A per-call ``SIGALRM`` interval
timer interrupts Python-level hangs; hangs inside C code are killed by the parent.

Answers go back as JSON (:func:`send`), never pickles: code that a reward runs (the code
reward runs model-written programs) and that reaches the result pipe can at worst send wrong
values, not run code in the trainer. The worker makes itself non-dumpable, so that processes
of the same (non-root) user, such as those programs, cannot open its ``/proc/<pid>/fd``
pipes or read its environment.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from r1jax.rewards.calls import MAX_MESSAGE_CHARS, call_with_timeout


def _resolve(ref: str, cache: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    if ref not in cache:
        from r1jax.rewards.registry import resolve_ref

        cache[ref] = resolve_ref(ref)
    return cache[ref]


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001  (best effort, Linux only)
        pass


def send(results: Connection, message: tuple) -> None:
    """One answer to the pool, as JSON (see the module docstring)."""
    results.send_bytes(json.dumps(message).encode())


def _not_dumpable() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0)  # PR_SET_DUMPABLE 0
    except Exception:  # noqa: BLE001  (best effort, Linux only)
        pass


def main(task_fd: int, result_fd: int, config: dict[str, Any]) -> None:
    """Worker loop: import ``config["preload"]`` modules, then serve chunks until EOF."""
    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    _die_with_parent()
    _not_dumpable()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    if config.get("memory_mb"):
        limit = int(config["memory_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        for module in config.get("preload", []):
            importlib.import_module(module)
    except BaseException as e:  # noqa: BLE001
        send(results, ("fatal", f"worker could not import reward modules: {type(e).__name__}: {e}"))
        return
    send(results, ("ready", os.getpid()))
    cache: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            message = tasks.recv()
        except (EOFError, OSError):
            return
        if message[0] != "run":
            return
        for call_id, ref, completion, row, kwargs, timeout_s in message[1]:
            try:
                fn = _resolve(ref, cache)
            except Exception as e:  # noqa: BLE001
                send(
                    results,
                    (call_id, "error", 0.0, f"cannot import {ref}: {e}"[:MAX_MESSAGE_CHARS]),
                )
                continue
            send(results, (call_id, *call_with_timeout(fn, completion, row, kwargs, timeout_s)))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
