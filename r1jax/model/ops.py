"""Model ops with hand-written backward passes, for speed; each equals autodiff of its plain
formula (``tests/test_model_ops.py``, and whole-model gradients vs ``transformers``).

* :func:`dense`: the projections as one 2-D GEMM. Autodiff of ``x @ w`` forms the weight
  gradient as ``dot(g, x)`` followed by a transpose. On XLA:CPU that dot wants row-major
  ``[M, K] x [K, N]`` operands, so layout assignment made the producer of ``g`` write it
  transposed: for the MLP's gate and up projections a strided write of the
  ``[tokens, intermediate]`` SiLU backward that cost more than the GEMM it fed (GRPO
  update, 4 layers: ~100 ms of ~900). The backward here transposes whichever of ``x`` and
  ``g`` has fewer columns. Same products, summed over the same tokens. XLA's GPU and TPU
  backends fold transposes into their GEMMs' operand layouts (not yet timed on either).
* :func:`swiglu`: ``silu(g) * u`` in one elementwise pass forward and one backward (autodiff
  stored the sigmoid and the SiLU as separate passes over ``[tokens, intermediate]``).
* :func:`apply_rope`: the rotary embedding with the cos/sin table built once per forward
  pass (:func:`rope_table`); its backward is the rotation by the opposite angles, one pass
  (autodiff of the split/concatenate took several). XLA:CPU recomputes a ``[B, T]`` table's
  cos/sin inside every fusion that reads it (per layer, per head, forward and backward);
  with ``max_position`` the table holds each position once and rows gather from it, which
  it does not (GRPO update on 2 CPU devices: 0.737 -> 0.717 s).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [M, K] @ w [K, N] -> [M, N]``."""
    return x @ w


def _matmul_fwd(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return x @ w, (x, w)


def _matmul_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = res
    dx = g @ w.T
    # dw [K, N] = x^T g: transpose the operand with fewer columns (the cheaper copy).
    dw = x.T @ g if x.shape[1] <= g.shape[1] else (g.T @ x).T
    return dx.astype(x.dtype), dw.astype(w.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dense(x: jax.Array, w: jax.Array, contract: int = 1) -> jax.Array:
    """Contracts the last ``contract`` axes of ``x [..., K1..Kc]`` with the first ``contract``
    axes of ``w [K1..Kc, N1..Nm]`` -> ``[..., N1..Nm]`` (same dtype rules as ``@``)."""
    k_shape, n_shape = w.shape[:contract], w.shape[contract:]
    if x.shape[x.ndim - contract :] != k_shape:
        raise ValueError(f"dense: x {x.shape} does not end in the weight's input axes {k_shape}")
    lead = x.shape[: x.ndim - contract]
    k, n = math.prod(k_shape), math.prod(n_shape)
    y = _matmul(x.reshape(math.prod(lead), k), w.reshape(k, n))
    return y.reshape(*lead, *n_shape)


@jax.custom_vjp
def swiglu(g: jax.Array, u: jax.Array) -> jax.Array:
    """``silu(g) * u`` for gate and up projections ``g, u [..., I]`` (same dtype)."""
    return jax.nn.silu(g) * u


def _swiglu_fwd(g: jax.Array, u: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return swiglu(g, u), (g, u)


def _swiglu_bwd(res: tuple[jax.Array, jax.Array], dh: jax.Array) -> tuple[jax.Array, jax.Array]:
    g, u = res
    gf, uf, dhf = (a.astype(jnp.float32) for a in (g, u, dh))
    sig = jax.nn.sigmoid(gf)
    dg = dhf * uf * sig * (1.0 + gf * (1.0 - sig))  # d silu/dg = sig + g sig (1 - sig)
    du = dhf * gf * sig
    return dg.astype(g.dtype), du.astype(u.dtype)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class Rope(NamedTuple):
    """Cosines and sines ``[B, T, 1, Dh/2]`` (float32) of each position's rotary angles,
    computed once per forward pass and shared by every layer's queries and keys."""

    cos: jax.Array
    sin: jax.Array


def rope_table(positions: jax.Array, inv_freq: jax.Array, max_position: int | None = None) -> Rope:
    """``positions [B, T]``, ``inv_freq [Dh/2]`` -> :class:`Rope`.

    ``max_position``: a static bound on the positions (all ``< max_position``). The cos/sin
    are then computed for ``0 .. max_position - 1`` and gathered per row (same values); a
    position at or past the bound reads NaN, never a wrong angle.
    """
    if max_position is None:
        angles = positions.astype(jnp.float32)[..., None, None] * inv_freq  # [B, T, 1, Dh/2]
        return Rope(jnp.cos(angles), jnp.sin(angles))
    angles = jnp.arange(max_position, dtype=jnp.float32)[:, None] * inv_freq  # [S, Dh/2]

    def rows(table: jax.Array) -> jax.Array:  # [S, Dh/2] -> [B, T, 1, Dh/2]
        return jnp.take(table, positions, axis=0, mode="fill", fill_value=jnp.nan)[..., None, :]

    return Rope(rows(jnp.cos(angles)), rows(jnp.sin(angles)))


def apply_rope(x: jax.Array, rope: Rope) -> jax.Array:
    """Rotates ``x [B, T, N, Dh]`` by the table's angles (half-split convention of HF). The
    backward is the rotation by the opposite angles, one elementwise pass (autodiff of the
    split/concatenate took several)."""
    return _rotate(x, rope.cos, rope.sin)


def _rotate_halves(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


@jax.custom_vjp
def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    return _rotate_halves(x, cos, sin)


def _rotate_fwd(x, cos, sin):
    return _rotate_halves(x, cos, sin), (cos, sin)


def _rotate_bwd(res, g):
    cos, sin = res  # the angles come from integer positions: no gradient
    return _rotate_halves(g, cos, -sin), None, None


_rotate.defvjp(_rotate_fwd, _rotate_bwd)


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
    """``cap * tanh(x / cap)`` (Gemma 2's soft-capping of scores and logits); ``x`` when
    ``cap`` is None."""
    return x if cap is None else cap * jnp.tanh(x / cap)
