"""Per-token log-probs of the taken tokens without the full ``[B, T, V]`` logits.

For a 151k vocabulary, fp32 logits for a whole batch are gigabytes. Here the
logits exist one chunk of ``C`` positions at a time: ``[B, C, V]`` in fp32,
reduced at once to the target's log-prob (logsumexp + gather) and optionally
the entropy. The chunk function is rematerialised (``jax.checkpoint``), so the
backward pass also recomputes one chunk's logits at a time instead of saving
them all.

Temperature: logits are divided by ``temperature`` before the softmax. GRPO's
ratio uses the policy's own log-probs (``temperature=1``); pass the sampling
temperature only to reproduce the sampler's log-probs.

Gradient precision: the ``lm_head`` gradient is summed over chunks in
``lm_head``'s own dtype. With fp32 master weights, pass them as they are (or
:func:`compute_dtype_head`, which casts them to bf16 inside), so the sum stays in fp32.

Matrix heads (and :func:`compute_dtype_head`) take a hand-written backward pass: it
recomputes the chunk's logits, forms ``d logits`` in one elementwise pass, casts it to
the compute dtype and runs the two gradient GEMMs in that dtype (as the model's own layers
do), instead of autodiff's fp32 GEMMs and several passes over the ``[B, C, V]`` chunk. In
fp32 compute it is exact.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from r1jax.model.ops import softcap

LmHead = jax.Array | Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class CastHead:
    """An lm head ``[B, C, D] -> [B, C, V]`` (float32 logits) that multiplies by ``w [D, V]``
    cast to the hidden states' dtype (see :func:`compute_dtype_head`)."""

    w: jax.Array

    def __call__(self, h: jax.Array) -> jax.Array:
        return _chunk_logits(h, self.w, 1.0, h.dtype)


def compute_dtype_head(w: jax.Array) -> CastHead:
    """An lm head ``[B, C, D] -> [B, C, V]`` (float32 logits) that casts ``w [D, V]`` to the
    hidden states' dtype inside: with bf16 compute and fp32 master weights the GEMM runs in
    bf16 like the model's own logits (and the sampler's), while the gradient of ``w`` still
    sums over chunks in fp32. A no-op cast in fp32 compute."""
    return CastHead(w)


def model_head(model) -> LmHead:
    """The lm head of ``model`` for :func:`token_logprobs`: :func:`compute_dtype_head` of its
    output weights, soft-capped like the model's own logits when it has ``final_softcap``
    (Gemma 2: a callable head, differentiated by autodiff)."""
    head = compute_dtype_head(model.lm_head_weight())
    cap = model.cfg.final_softcap
    if cap is None:
        return head
    return lambda h: softcap(head(h), cap)


def _chunk_logits(h: jax.Array, w: jax.Array, temperature: float, dtype: jnp.dtype) -> jax.Array:
    """``h [B, C, D] @ w [D, V] / temperature`` with both cast to ``dtype``: float32 logits."""
    x = jnp.einsum(
        "bcd,dv->bcv", h.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32
    )
    return x / temperature


def _reduce_chunk(
    logits: jax.Array, tgt: jax.Array, entropy: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(logp, entropy, lse)`` ``[B, C]`` from float32 ``logits [B, C, V]``.

    Two passes over the chunk: the max, then ``S = sum e`` and ``sum e * x`` together
    (``x = logits - max``, ``e = exp(x)``). The entropy ``log S - sum(e x) / S`` adds two
    non-negative terms, so large logits do not cancel."""
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - top
    e = jnp.exp(shifted)
    total = jnp.sum(e, axis=-1)
    lse = top[..., 0] + jnp.log(total)
    logp = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0] - lse
    if not entropy:
        return logp, jnp.zeros_like(logp), lse
    e_x = jnp.where(e > 0, e * shifted, 0.0)  # -inf logits (masked vocab) add nothing
    return logp, jnp.log(total) - jnp.sum(e_x, axis=-1) / total, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _matrix_chunk(
    h: jax.Array, w: jax.Array, tgt: jax.Array, temperature: float, dtype: jnp.dtype, entropy: bool
) -> tuple[jax.Array, jax.Array]:
    """``(logp, entropy)`` ``[B, C]`` of one chunk ``h [B, C, D]`` under ``w [D, V]``."""
    return _matrix_chunk_fwd(h, w, tgt, temperature, dtype, entropy)[0]


def _matrix_chunk_fwd(h, w, tgt, temperature, dtype, entropy):
    logits = _chunk_logits(h, w, temperature, dtype)  # [B, C, V] float32
    logp, ent, lse = _reduce_chunk(logits, tgt, entropy)
    return (logp, ent), (h, w, tgt, lse, ent)


def _matrix_chunk_bwd(temperature, dtype, entropy, res, cotangents):
    h, w, tgt, lse, ent = res
    g_logp, g_ent = cotangents
    logp_all = _chunk_logits(h, w, temperature, dtype) - lse[..., None]
    probs = jnp.exp(logp_all)
    onehot = tgt[..., None] == jax.lax.broadcasted_iota(tgt.dtype, logp_all.shape, 2)
    dz = g_logp[..., None] * (onehot - probs)  # d logp / d logits = onehot - softmax
    if entropy:  # H = -E_p[log p]: d H / d z = -p (log p - E_p[log p]) = -p (log p + H)
        dz = dz - g_ent[..., None] * probs * (logp_all + ent[..., None])
    dz = (dz / temperature).astype(dtype)
    # Outputs in the compute dtype, like autodiff of the cast GEMM (the GEMMs accumulate in
    # fp32 inside; XLA:CPU cannot run every layout of a bf16 x bf16 -> f32 dot).
    dh = jnp.einsum("bcv,dv->bcd", dz, w.astype(dtype))
    dw = jnp.einsum("bcd,bcv->dv", h.astype(dtype), dz)
    return dh.astype(h.dtype), dw.astype(w.dtype), None


_matrix_chunk.defvjp(_matrix_chunk_fwd, _matrix_chunk_bwd)


def token_logprobs(
    hidden: jax.Array,
    lm_head: LmHead,
    targets: jax.Array,
    chunk_size: int = 256,
    compute_entropy: bool = False,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array | None]:
    """Log-probs (and entropies) of ``targets`` under ``softmax(hidden @ lm_head / temperature)``.

    Args:
      hidden: ``[B, T, D]`` final hidden states (bf16 or fp32); position ``t``
        predicts ``targets[:, t]``.
      lm_head: ``[D, V]`` unembedding matrix, or a pure callable mapping
        ``[B, C, D]`` hidden states to ``[B, C, V]`` logits (tied embeddings,
        soft-capping, ...). Logits are computed and reduced in fp32.
      targets: ``[B, T]`` int token ids in ``[0, V)``.
      chunk_size: ``C``, positions per chunk; ``T`` need not be a multiple
        (the last chunk is padded and the padding dropped).
      compute_entropy: also return the entropy ``-sum_v p log p`` per position.
      temperature: divides the logits (> 0).

    Returns:
      ``(logp [B, T] float32, entropy [B, T] float32 or None)``.
    """
    if hidden.ndim != 3:
        raise ValueError(f"hidden must have shape [B, T, D], got {hidden.shape}")
    batch, length, dim = hidden.shape
    if targets.shape != (batch, length):
        raise ValueError(f"targets has shape {targets.shape}, expected {(batch, length)}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(f"targets must be integer token ids, got dtype {targets.dtype}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if callable(lm_head) and not isinstance(lm_head, CastHead):
        project = lambda h: lm_head(h).astype(jnp.float32)  # noqa: E731
        one_chunk = _autodiff_chunk(project, temperature, compute_entropy)
    else:
        w = lm_head.w if isinstance(lm_head, CastHead) else lm_head
        if w.ndim != 2:
            raise ValueError(f"lm_head must have shape [D, V] or be callable, got {w.shape}")
        dtype = hidden.dtype if isinstance(lm_head, CastHead) else jnp.result_type(hidden, w)
        if isinstance(temperature, (int, float)):
            chunk_fn = functools.partial(
                _matrix_chunk, temperature=float(temperature), dtype=dtype, entropy=compute_entropy
            )

            def one_chunk(args: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
                return chunk_fn(args[0], w, args[1])

        else:  # a traced temperature cannot be a static argument of the custom backward
            project = functools.partial(_chunk_logits, w=w, temperature=1.0, dtype=dtype)
            one_chunk = _autodiff_chunk(project, temperature, compute_entropy)

    chunk = min(chunk_size, length)
    num_chunks = -(-length // chunk)
    pad = num_chunks * chunk - length
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    # [n, B, C, D] and [n, B, C]: chunks along T become the mapped axis.
    hidden_chunks = hidden.reshape(batch, num_chunks, chunk, dim).swapaxes(0, 1)
    target_chunks = targets.reshape(batch, num_chunks, chunk).swapaxes(0, 1)

    logp, entropy = jax.lax.map(one_chunk, (hidden_chunks, target_chunks))

    def unchunk(x: jax.Array) -> jax.Array:
        return x.swapaxes(0, 1).reshape(batch, num_chunks * chunk)[:, :length]

    return unchunk(logp), unchunk(entropy) if compute_entropy else None


def _autodiff_chunk(
    project: Callable[[jax.Array], jax.Array], temperature: jax.Array | float, entropy: bool
) -> Callable[[tuple[jax.Array, jax.Array]], tuple[jax.Array, jax.Array]]:
    """One chunk for callable heads (or a traced temperature): autodiff, rematerialised."""

    @jax.checkpoint
    def one_chunk(args: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        h, tgt = args
        logp, ent, _ = _reduce_chunk(project(h) / temperature, tgt, entropy)
        return logp, ent

    return one_chunk
