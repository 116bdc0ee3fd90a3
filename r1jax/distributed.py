"""Multi-host start-up (``jax.distributed.initialize`` from the environment) and small
cross-process reductions of host values.

Set ``R1JAX_DISTRIBUTED=1`` on every process (the launch scripts do). On Cloud TPU VMs and
under SLURM, JAX finds the coordinator itself; elsewhere set ``R1JAX_COORDINATOR=host:port``,
``R1JAX_NUM_PROCESSES`` and ``R1JAX_PROCESS_ID``.

The reductions below are collectives: every process must call them, in the same order and
with the same shapes, or the run hangs. With one process they return their input.
:func:`agree_within` is not a collective: it goes through the coordination service, so a
process that never comes (e.g. one left waiting inside a collective) makes it time out.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np

T = TypeVar("T")


def maybe_initialize() -> bool:
    """Initialises multi-host JAX when ``R1JAX_DISTRIBUTED=1``; returns whether it did."""
    if os.environ.get("R1JAX_DISTRIBUTED", "0") != "1":
        return False
    kwargs = {}
    if os.environ.get("R1JAX_COORDINATOR"):
        kwargs = dict(
            coordinator_address=os.environ["R1JAX_COORDINATOR"],
            num_processes=int(os.environ["R1JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["R1JAX_PROCESS_ID"]),
        )
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":  # (querying the backend would init it)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's preemption service would catch SIGTERM for its own sync points, which r1jax does
    # not use: the training loops save and stop on SIGTERM themselves (r1jax.interrupt), and
    # outside them SIGTERM ends the process as usual.
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(**kwargs)
    return True


def cpu_device_count(requested: int) -> int:
    """The number of XLA CPU devices ``mesh.cpu_devices = requested`` asks for: ``requested``
    itself when positive; for ``-1``, one per usable core rounded down to a power of two (so
    that power-of-two batch sizes divide), at most 8."""
    if requested == -1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return min(8, 1 << ((cores or 1).bit_length() - 1))
    if requested < 1:
        raise ValueError(
            f"mesh.cpu_devices={requested}: must be >= 1, 0 (JAX's default) or -1 (one per core)"
        )
    return requested


_CPU_SCHEDULER = "xla_cpu_enable_concurrency_optimized_scheduler"
ORDERED_CPU_COLLECTIVES_FLAG = f"--{_CPU_SCHEDULER}=false"
"""XLA:CPU flag :func:`keep_cpu_collectives_in_order` adds (see there)."""


def keep_cpu_collectives_in_order() -> bool:
    """Adds :data:`ORDERED_CPU_COLLECTIVES_FLAG` to ``XLA_FLAGS`` unless they already set the
    scheduler flag; returns whether it did. Must run before JAX starts its backends.

    With several CPU devices in one process, XLA:CPU's concurrency-optimised scheduler lets
    the devices of one program reach their collectives in different orders; they then wait
    for each other until XLA aborts the process ("Termination timeout for `all reduce ...`").
    Measured on the 2-core development VM with 8 devices and a (2, 2, 2) mesh (default
    optimisation), the sharded sampler's test aborted in 3 of 6 runs with the scheduler on and
    0 of 6 with it off; with 2 devices the GRPO step's sampling and update took the same time
    either way (``benchmarks/RESULTS.md``).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if _CPU_SCHEDULER in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {ORDERED_CPU_COLLECTIVES_FLAG}".strip()
    return True


def configure_cpu_devices(requested: int) -> int | None:
    """Splits this host's CPU backend into several XLA devices (``mesh.cpu_devices``).

    On a CPU-only machine JAX makes one device that runs one op at a time, each op using the
    cores it can. Several devices run the data-parallel shards of a step side by side; the
    small ops of a small model (sampling above all) then keep every core busy. Has no effect
    on the GPU/TPU devices. ``requested = 0`` keeps JAX's default; so does an explicit
    ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` or ``jax_num_cpu_devices``
    set by the caller (those win). Whenever the CPU may have several devices (this split, or
    the caller's), XLA:CPU's collectives are kept in order (:func:`keep_cpu_collectives_in_order`).
    Must run before the first JAX computation; later, it warns and changes nothing. Returns
    the device count it set, or ``None``.
    """
    explicit = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if requested != 0 or explicit or jax.config.jax_num_cpu_devices > 1:
        keep_cpu_collectives_in_order()
    if requested == 0:
        return None
    count = cpu_device_count(requested)
    if explicit or jax.config.jax_num_cpu_devices >= 0:
        return None
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backends already exist
        if jax.default_backend() != "cpu" or jax.local_device_count() == count:
            return None  # nothing to split (an accelerator host), or already as asked
        warnings.warn(
            f"mesh.cpu_devices={requested} ignored: JAX was already initialised (it has "
            f"{jax.local_device_count()} CPU device(s)). Set it before the first JAX "
            "computation, e.g. run through `r1jax train`.",
            stacklevel=2,
        )
        return None
    return count


def is_primary() -> bool:
    """True on process 0, the one that writes logs, metrics and progress bars."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier ``name``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def primary_first(fn: Callable[[], T]) -> T:
    """``fn()`` on process 0, then on the others: for steps that write shared files (preparing
    a dataset) and must not race."""
    if jax.process_count() == 1:
        return fn()
    out = fn() if is_primary() else None
    barrier("r1jax primary_first")
    return out if is_primary() else fn()


def allgather(tree: Any) -> Any:
    """Each array ``[n, ...]`` (same shape on every process) -> ``[count * n, ...]``, the
    processes' arrays concatenated in process order. Scalars become ``[count]``."""
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.atleast_1d(np.asarray(x)), tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(
        lambda x: np.asarray(multihost_utils.process_allgather(np.atleast_1d(x), tiled=True)),
        tree,
    )


def all_true(flag: bool) -> bool:
    """``flag`` on every process."""
    return bool(np.all(allgather(np.array([bool(flag)]))))


def allgather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable ``value``, in process order."""
    if jax.process_count() == 1:
        return [value]
    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    width = int(allgather(np.array([data.size])).max())
    padded = np.zeros(width, np.uint8)
    padded[: data.size] = data
    rows = allgather(padded[None])
    return [json.loads(bytes(r).rstrip(b"\0").decode()) for r in rows]


_AGREEMENTS: dict[str, int] = {}  # calls of agree_within per name: the same on every process


def agree_within(flag: bool, name: str, timeout_s: float) -> bool | None:
    """``flag`` on every process, exchanged through the coordination service's key-value
    store instead of a collective; None when some process did not report within
    ``timeout_s`` (it may be waiting in a collective for this one). Every process calls it
    with the same ``name`` the same number of times."""
    if jax.process_count() == 1:
        return flag
    from jax._src import distributed

    client = distributed.global_state.client
    n = _AGREEMENTS[name] = _AGREEMENTS.get(name, 0) + 1
    prefix = f"r1jax/{name}/{n}"
    client.key_value_set(f"{prefix}/{jax.process_index()}", "1" if flag else "0")
    deadline = time.monotonic() + timeout_s
    votes = []
    for pid in range(jax.process_count()):
        left_ms = max(1, int(1000 * (deadline - time.monotonic())))
        try:
            votes.append(client.blocking_key_value_get(f"{prefix}/{pid}", left_ms) == "1")
        except Exception:  # noqa: BLE001 - the deadline passed (the service's own error type)
            return None
    return all(votes)
