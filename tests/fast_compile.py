"""XLA flags every test process compiles with (tests/conftest.py sets them; processes the tests
start with their own ``XLA_FLAGS`` add them).

LLVM's optimisation passes are most of the time XLA takes to compile a program for the CPU, and
the tests' tiny models spend far longer compiling than running. Without the passes the code
runs slower but computes the same thing (no fast-math either way); bitwise comparisons in the
tests are between programs compiled with the same flags.

XLA:CPU's concurrency-optimised scheduler is off, as r1jax turns it off for CPU runs with
several devices (:func:`r1jax.distributed.keep_cpu_collectives_in_order`): with 8 fake devices
on a 2-core machine it let the devices of one program reach their collectives in different
orders, and the sharded sampler on a (2, 2, 2) mesh deadlocked in about half of the runs (XLA
aborts after 40 s: "Termination timeout for `all reduce ...`"; 12 of 22 runs of
tests/test_sampler_sharded.py before, 0 of 12 after, on the 2-core development VM).
"""

FAST_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

# (the flag spelled out: importing r1jax here would import jax before conftest sets JAX_* vars)
TEST_XLA_FLAGS = f"{FAST_COMPILE_XLA_FLAGS} --xla_cpu_enable_concurrency_optimized_scheduler=false"
"""All the flags above: what test processes and the processes they start compile with."""
