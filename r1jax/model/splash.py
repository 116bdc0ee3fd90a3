"""Splash attention: the Pallas flash-attention kernel for TPUs (``model.attention="splash"``).

The einsum attention writes the ``[B, H, T, S]`` fp32 scores of every layer, 1 GB per head
and row at 16k tokens; splash attention (``jax.experimental.pallas.ops.tpu.splash_attention``,
the kernel MaxText uses) works block by block, never forms them, and skips the blocks the
causal mask hides. Masks reach it as segment ids: a :class:`~r1jax.model.attention.RowSpan`
row is segment 1 on its real slots and 0 on padding; a
:class:`~r1jax.model.attention.Segments` mask passes its ids (packed SFT rows). Padding
attends padding, so no query row is empty (no NaN); nothing reads those outputs.

Sequences are padded to a multiple of 128 (the kernel's lane width) with a segment of their
own. Under a mesh (``r1jax.sharding.on_mesh``) the kernel runs in ``jax.shard_map``: each
device takes its rows (``data`` x ``fsdp``) and heads (``tensor``), as the model shards them.
On CPU the same kernel runs in Pallas interpret mode (slow; for tests); GPUs have
``model.attention="cudnn"`` instead.

Shapes: B batch, T queries, S key slots, H query heads, K kv heads, Dh head dim.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from r1jax import sharding as shd
from r1jax.model.attention import Mask, RowSpan, Segments, cached_kv

LANES = 128  # sequence lengths are padded to a multiple of this
BLOCKS = (512, 256, 128)  # the largest that divides a padded length is the kernel's block
_PAD_SEGMENT = -1  # the padding appended to reach a multiple of LANES


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _block(length: int) -> int:
    return next(b for b in BLOCKS if length % b == 0)


def segment_ids(mask: Mask, queries: int, slots: int) -> tuple[jax.Array, jax.Array, int]:
    """``(q_ids [B, T], kv_ids [B, S], offset)``: the mask as segment ids plus the causal
    offset (query ``t`` sits at slot ``offset + t``)."""
    if isinstance(mask, Segments):
        if queries != slots:
            raise ValueError(f"a Segments mask needs queries == keys, got {queries} x {slots}")
        return mask.ids, mask.ids, 0
    if isinstance(mask, RowSpan):
        q_real, real = mask.real_slots(queries, slots)
        return q_real.astype(jnp.int32), real.astype(jnp.int32), mask.offset
    raise ValueError(
        "model.attention='splash' takes a RowSpan or Segments mask, not a dense [B, T, S] "
        "array (build the mask with RowSpan.from_mask or Segments)"
    )


def _pad(x: jax.Array, length: int, value: int = 0) -> jax.Array:
    """``x [B, T, ...]`` padded along axis 1 to ``length``."""
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, length - x.shape[1])
    return jnp.pad(x, pad, constant_values=value)


def _kernel(
    heads: int,
    queries: int,
    slots: int,
    offset: int,
    interpret: bool,
    softcap: float | None = None,
    window: int | None = None,
):
    """The splash kernel for one row: ``(q [H, T, Dh], k/v [K, S, Dh], SegmentIds) -> out``;
    ``window``: the last ``w`` slots up to the query's own (a sliding-window layer),
    ``softcap``: of the scores (Gemma 2)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    if window is None:
        causal = sm.CausalMask((queries, slots), offset=offset)
    else:
        causal = sm.LocalMask((queries, slots), window_size=(window - 1, 0), offset=offset)
    bq, bkv = _block(queries), _block(slots)
    blocks = sk.BlockSizes(
        block_q=bq, block_kv=bkv, block_kv_compute=bkv,
        block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
        block_q_dq=bq, block_kv_dq=bkv,
    )  # fmt: skip
    return sk.make_splash_mha(
        sm.MultiHeadMask([causal] * heads),
        block_sizes=blocks,
        attn_logits_soft_cap=softcap,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )


def _rows(q, k, v, q_ids, kv_ids, offset: int, interpret: bool, softcap, window) -> jax.Array:
    """Splash attention of local rows: ``q [b, Tp, h, Dh]``, ``k, v [b, Sp, k, Dh]``, ids
    ``[b, Tp]`` / ``[b, Sp]`` -> ``[b, Tp, h, Dh]``."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    kernel = _kernel(q.shape[2], q.shape[1], k.shape[1], offset, interpret, softcap, window)
    heads_first = lambda x: x.transpose(0, 2, 1, 3)
    out = jax.vmap(kernel)(
        heads_first(q), heads_first(k), heads_first(v), segment_ids=sk.SegmentIds(q_ids, kv_ids)
    )
    return heads_first(out)


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    cache: dict[str, jax.Array] | None,
    mask: Mask,
    scale: float | None = None,
    softcap: float | None = None,
    window: int | None = None,
) -> jax.Array:
    """``q [B, T, H, Dh]`` over ``k, v [B, T, K, Dh]`` (or the whole ``cache``) ->
    ``[B, T, H, Dh]``, through the splash kernel (see the module docstring). ``scale`` of the
    scores (default ``Dh**-0.5``), ``softcap`` of the scaled scores and ``window`` (the last
    ``w`` slots up to the query's own) as in :func:`r1jax.model.attention.einsum_attention`."""
    backend = jax.default_backend()
    if backend == "gpu":
        raise ValueError("model.attention='splash' is the TPU kernel; on GPUs use 'cudnn'")
    if cache is not None:
        k, v = cached_kv(cache)
    b, t, h, hd = q.shape
    slots = k.shape[1]
    q_ids, kv_ids, offset = segment_ids(mask, t, slots)
    if offset + t != slots:
        raise ValueError(f"splash attention: queries at slots {offset}..{offset + t - 1} must "
                         f"end at the last of {slots} key slots")  # fmt: skip
    tp = _round_up(t, LANES)
    # The appended queries sit after every key slot and attend the appended keys; under a
    # sliding window, which may hide the others, each needs its own slot's key.
    sp = _round_up(slots + (tp - t if window else tp > t), LANES)
    q_ids, kv_ids = _pad(q_ids, tp, _PAD_SEGMENT), _pad(kv_ids, sp, _PAD_SEGMENT)
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    q = _pad(q * jnp.asarray(scale, q.dtype), tp)
    k, v = _pad(k.astype(q.dtype), sp), _pad(v.astype(q.dtype), sp)
    run = functools.partial(
        _rows, offset=offset, interpret=backend != "tpu", softcap=softcap, window=window
    )
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1:
        batch = shd.BATCH_AXES if b % shd.batch_divisor(mesh) == 0 else None
        tensor = mesh.shape["tensor"]
        heads = "tensor" if h % tensor == 0 and k.shape[2] % tensor == 0 else None
        x, ids = P(batch, None, heads, None), P(batch, None)
        run = jax.shard_map(run, in_specs=(x, x, x, ids, ids), out_specs=x, check_vma=False)
    return run(q, k, v, q_ids, kv_ids)[:, :t]
