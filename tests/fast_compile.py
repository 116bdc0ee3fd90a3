"""XLA flags every test process compiles with (tests/conftest.py sets them; processes the tests
start with their own ``XLA_FLAGS`` add them).

LLVM's optimisation passes are most of the time XLA takes to compile a program for the CPU, and
the tests' tiny models spend far longer compiling than running. Without the passes the code
runs slower but computes the same thing (no fast-math either way); bitwise comparisons in the
tests are between programs compiled with the same flags.
"""

FAST_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)
