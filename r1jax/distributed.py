"""Multi-host start-up: ``jax.distributed.initialize`` from the environment.

Set ``R1JAX_DISTRIBUTED=1`` on every process (the launch scripts do). On Cloud TPU VMs and
under SLURM, JAX finds the coordinator itself; elsewhere set ``R1JAX_COORDINATOR=host:port``,
``R1JAX_NUM_PROCESSES`` and ``R1JAX_PROCESS_ID``.
"""

from __future__ import annotations

import os

import jax


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
    jax.distributed.initialize(**kwargs)
    return True
