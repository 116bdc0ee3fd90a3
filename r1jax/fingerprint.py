"""Exact fingerprints of weights, the same on any mesh: which base a LoRA checkpoint needs.

Each array gets two 32-bit hashes ``sum_i bits(x_i) * m(i) mod 2**32``, with ``bits`` the
element's bit pattern, ``i`` its row-major index in the global array and ``m`` two odd
multipliers mixed from ``i``. Integer sums wrap, so any reduction order gives the same value
(no floating-point tolerance; 1 vs 8 devices, any sharding); a change of one element always
changes both hashes (``m(i)`` is odd). The shape is not part of it (the same elements in
another shape hash the same: compare shapes too). A jitted pass over the weights.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _hash(x: jax.Array) -> jax.Array:
    """``uint32[2]``: the two hashes of ``x`` (any shape and dtype)."""
    if x.dtype.itemsize in _UINT:
        bits = lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
    else:  # 8-byte elements: two 32-bit words each (a trailing axis of 2)
        bits = lax.bitcast_convert_type(x, jnp.uint32)
    index = jnp.zeros(bits.shape, jnp.uint32)  # row-major position, mod 2**32
    for axis, n in enumerate(bits.shape):
        index = index * jnp.uint32(n) + lax.broadcasted_iota(jnp.uint32, bits.shape, axis)
    m1 = (index * jnp.uint32(0x9E3779B1) + jnp.uint32(0x632BE5AB)) | jnp.uint32(1)
    m2 = ((index ^ jnp.uint32(0x85EBCA6B)) * jnp.uint32(0xC2B2AE35)) | jnp.uint32(1)
    return jnp.stack([jnp.sum(bits * m1, dtype=jnp.uint32), jnp.sum(bits * m2, dtype=jnp.uint32)])


@functools.cache
def _hasher(out: NamedSharding | None):
    return jax.jit(lambda xs: [_hash(x) for x in xs], out_shardings=out)


def fingerprints(arrays: dict[str, jax.Array]) -> dict[str, str]:
    """``{name: "xxxxxxxx-xxxxxxxx"}``: each array's two hashes in hex. Every process gets
    the same (the hashes are replicated over the arrays' mesh)."""
    if not arrays:
        return {}
    sharding = getattr(next(iter(arrays.values())), "sharding", None)
    out = NamedSharding(sharding.mesh, P()) if isinstance(sharding, NamedSharding) else None
    hashes = jax.device_get(_hasher(out)(list(arrays.values())))
    return {
        name: f"{int(h[0]):08x}-{int(h[1]):08x}" for name, h in zip(arrays, hashes, strict=True)
    }
