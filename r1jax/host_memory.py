"""Host-memory allocator settings for runs on the XLA CPU backend (``mesh.cpu_keep_memory``).

XLA:CPU allocates each call's temporaries afresh: one block per device and call, 228 MB for
the GRPO update of ``benchmarks/bench_grpo.py``. glibc's ``malloc`` serves a block that big
with ``mmap`` and returns it with ``munmap`` when the call ends, so every call page-faults
its temporaries in again: ~117,000 faults and ~0.25 s of kernel time per update on the
2-core development VM, a quarter of the update's CPU time. :func:`keep_freed_memory` makes
``malloc`` keep freed memory in this process and hand it out again:

- ``M_MMAP_MAX = 0``: large blocks come from the heap instead of their own mappings;
- ``M_TRIM_THRESHOLD`` at its maximum: freed memory at the top of the heap stays mapped;
- ``M_ARENA_MAX = 1``: every thread allocates from the main heap (the per-thread heaps hold
  at most 64 MB each, so XLA's threads would fall back to ``mmap`` for the big blocks).

The process then keeps its peak heap size until it exits. Threads that allocated before the
call keep their own heaps, so call it before JAX creates its CPU client (the first JAX
computation), as ``r1jax.build.configure_devices`` does. Linux with glibc only; elsewhere
the functions do nothing and return ``False``.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

_KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_ARENA_MAX: 1}
# glibc's defaults on 64-bit hosts (an explicit trim threshold also stops glibc adapting it)
_DEFAULTS = {
    M_MMAP_MAX: 65536,
    M_TRIM_THRESHOLD: 128 * 1024,
    M_ARENA_MAX: 8 * (os.cpu_count() or 1),
}


def _mallopt(settings: dict[int, int]) -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(param, value) == 1 for param, value in settings.items())


def keep_freed_memory() -> bool:
    """Makes ``malloc`` reuse freed memory in this process instead of returning it to the
    kernel (see the module docstring). Returns whether every setting took effect."""
    return _mallopt(_KEEP)


def restore_defaults() -> bool:
    """Undoes :func:`keep_freed_memory` for later allocations (threads that already share
    the main heap keep sharing it). Returns whether every setting took effect."""
    return _mallopt(_DEFAULTS)
