"""Counting the programs a block of code builds."""

import contextlib

import jax

LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"


@contextlib.contextmanager
def backend_compiles():
    """Yields a list that collects one entry per program built inside the block: each is
    lowered to MLIR, also when the persistent compilation cache then has its executable."""
    events = []
    listener = lambda name, *a, **k: events.append(name)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
        events[:] = [e for e in events if e == LOWERING]
