"""Attention masks and the attention implementations of :class:`Attention` (TPU splash
attention is in :mod:`r1jax.model.splash`).

A mask is a dense boolean ``[B, T, S]`` array (True where query t may attend key s;
:func:`causal_mask`), a :class:`Segments` mask (causal within packed examples), or a
:class:`RowSpan`: rows whose real tokens form one contiguous run of slots, with causal
attention inside it. A span is what left-padded prompts followed by
right-padded completions are, and it lets ``jax.nn.dot_product_attention`` (cuDNN on NVIDIA
GPUs) use its causal + sequence-length masks, which skip the masked half of the work and read
no ``[B, T, S]`` mask, instead of a dense mask that it must apply to every block.

Shapes: B batch, T queries, S key slots, H query heads, K kv heads, Dh head dim.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from r1jax.model.ops import softcap as cap


def causal_mask(input_mask: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """Boolean attention mask ``[B, T, T]`` for a full (uncached) forward pass.

    Args:
      input_mask: ``[B, T]`` True for real tokens, False for padding.
      segment_ids: optional ``[B, T]`` ints; tokens attend only within their segment
        (packed SFT sequences).
    """
    t = input_mask.shape[1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    mask = causal[None] & input_mask[:, None, :] & input_mask[:, :, None]
    if segment_ids is not None:
        mask &= segment_ids[:, :, None] == segment_ids[:, None, :]
    return mask


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["start", "length"], meta_fields=["offset"]
)
@dataclasses.dataclass(frozen=True)
class RowSpan:
    """Causal attention within one contiguous run of real slots per row.

    Row b's real tokens are slots ``start[b] .. start[b] + length[b] - 1`` (``[B]`` int32
    each); query t sits at slot ``offset + t`` (static) and attends the real slots at or
    before its own. Equal to :func:`causal_mask` of the row's input mask (sliced to the
    queries) whenever that mask is one contiguous run, as rollouts' rows are (left-padded
    prompt, completion, right padding).
    """

    start: jax.Array
    length: jax.Array
    offset: int = 0

    @classmethod
    def from_mask(cls, input_mask: jax.Array, offset: int = 0) -> RowSpan:
        """The span of ``input_mask [B, S]`` (its real slots must be contiguous)."""
        length = jnp.sum(input_mask, axis=1, dtype=jnp.int32)
        start = jnp.argmax(input_mask, axis=1).astype(jnp.int32)
        return cls(start, jnp.maximum(length, 1), offset)  # an empty row attends slot 0

    def real_slots(self, queries: int, slots: int) -> tuple[jax.Array, jax.Array]:
        """``(queries [B, T], slots [B, S])`` bool: which query and key slots are real."""
        s = jnp.arange(slots)
        real = (s >= self.start[:, None]) & (s < (self.start + self.length)[:, None])  # [B, S]
        return jax.lax.dynamic_slice_in_dim(real, self.offset, queries, axis=1), real

    def dense(self, queries: int, slots: int) -> jax.Array:
        """The same mask as a ``[B, queries, slots]`` bool array."""
        q_real, real = self.real_slots(queries, slots)
        s = jnp.arange(slots)
        causal = s[None, :] <= self.offset + jnp.arange(queries)[:, None]  # [T, S]
        return causal[None] & real[:, None, :] & q_real[:, :, None]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["ids"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Segments:
    """Causal attention within segments: ``ids [B, T]`` int32, a token attends the earlier
    (and its own) tokens of its row with the same id; 0 marks padding (packed SFT rows:
    1, 2, ... per example). Queries and keys are the same ``T`` tokens (no cache)."""

    ids: jax.Array

    def dense(self, queries: int, slots: int) -> jax.Array:
        """The same mask as a ``[B, T, T]`` bool array (:func:`causal_mask`)."""
        if queries != slots or slots != self.ids.shape[1]:
            raise ValueError(f"a Segments mask has {self.ids.shape[1]} queries and keys, not "
                             f"{queries} x {slots} (no cache)")  # fmt: skip
        return causal_mask(self.ids > 0, self.ids)


Mask = jax.Array | RowSpan | Segments


def shift_rows(x: jax.Array, shift: jax.Array, length: int) -> jax.Array:
    """``y[b, j] = x[b, j + shift[b]]`` for ``j < length`` (zero where that is outside ``x``).

    ``x [B, S, ...]``, ``shift [B]`` int -> ``[B, length, ...]``. A gather whose gradient is
    the opposite shift (another gather, not a scatter-add)."""
    return _shift_rows(x, shift, length)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shift_rows(x: jax.Array, shift: jax.Array, length: int) -> jax.Array:
    src = jnp.arange(length)[None, :] + shift[:, None]  # [B, length]
    inside = (src >= 0) & (src < x.shape[1])
    rows = jax.vmap(lambda row, i: jnp.take(row, i, axis=0, mode="clip"))(x, src)
    inside = inside.reshape(inside.shape + (1,) * (x.ndim - 2))
    return jnp.where(inside, rows, jnp.zeros((), x.dtype))


def _shift_rows_fwd(x, shift, length):
    return _shift_rows(x, shift, length), (shift, x.shape[1])


def _shift_rows_bwd(length, res, g):
    shift, source_len = res
    return _shift_rows(g, -shift, source_len), None


_shift_rows.defvjp(_shift_rows_fwd, _shift_rows_bwd)


def cached_kv(cache: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """A layer's whole cache as keys and values ``[B, S, K, Dh]`` (the layout of new ones)."""
    return cache["k"].transpose(0, 3, 1, 2), cache["v"].transpose(0, 2, 1, 3)


def window_mask(window: tuple[int, jax.Array | int], queries: int, slots: int) -> jax.Array:
    """``[T, S]`` bool: query t (at slot ``first + t``) may see key slot s, for ``window =
    (w, first)``: s within the last ``w`` slots up to the query's own."""
    size, first = window
    back = first + jnp.arange(queries)[:, None] - jnp.arange(slots)[None, :]
    return back < size


def einsum_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    cache: dict[str, jax.Array] | None,
    mask: Mask,
    scale: float | None = None,
    softcap: float | None = None,
    window: tuple[int, jax.Array | int] | None = None,
) -> jax.Array:
    """``q [B, T, H, Dh]`` over ``k, v [B, T, K, Dh]`` (or the whole written ``cache``) ->
    ``[B, T, H, Dh]``. The q.k dot in the compute dtype, scaling, mask and softmax in fp32.

    ``scale``: of the scores (default ``Dh**-0.5``); ``softcap``: scores -> ``cap * tanh(
    scores / cap)`` after scaling (Gemma 2); ``window = (w, first)``: query t, at slot
    ``first + t``, sees only the keys of the last ``w`` slots up to its own (sliding-window
    layers; a row's real tokens are contiguous slots, so slots count positions)."""
    b, t, h, hd = q.shape
    kv_heads = k.shape[2]
    # The batch dims (b, k) lead so that XLA's batched dots read the cache in place.
    q = q.reshape(b, t, kv_heads, h // kv_heads, hd).transpose(0, 2, 3, 1, 4)
    if cache is None:
        keys, values = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, Dh]
        scores = jnp.einsum("bkgth,bksh->bkgts", q, keys)
    else:
        keys, values = cache["k"], cache["v"]
        scores = jnp.einsum("bkgth,bkhs->bkgts", q, keys.astype(q.dtype))
    if isinstance(mask, (RowSpan, Segments)):
        mask = mask.dense(t, scores.shape[-1])
    if window is not None:
        mask = mask & window_mask(window, t, scores.shape[-1])[None]
    scores = scores.astype(jnp.float32) * (hd**-0.5 if scale is None else scale)
    scores = cap(scores, softcap)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgts,bksh->bkgth", probs, values.astype(q.dtype))  # no out transpose
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd)


def library_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    cache: dict[str, jax.Array] | None,
    mask: Mask,
    implementation: str,
    scale: float | None = None,
    window: tuple[int, jax.Array | int] | None = None,
) -> jax.Array:
    """The same through ``jax.nn.dot_product_attention``: ``"cudnn"`` is cuDNN's fused
    (flash) attention on NVIDIA GPUs, which never writes the ``[B, H, T, S]`` scores;
    ``"xla"`` is JAX's reference lowering (CPU tests of this path). ``scale`` of the scores
    (default ``Dh**-0.5``); ``window``: as :func:`einsum_attention`'s (no soft-capping here,
    which ``jax.nn.dot_product_attention`` lacks).

    With a :class:`RowSpan`, each row is shifted so that its real slots start at slot 0 and
    its queries sit at their own slots (``[B, S, H, Dh]``, zero elsewhere): the mask is then
    causal + sequence lengths, which cuDNN applies per block without a mask tensor, and
    padding queries are outside the sequence lengths.

    A dense mask's query rows with no key at all (padding queries, whose outputs nothing
    uses) attend every key instead: on an H200, cuDNN returned NaN gradients for batches
    with such rows, and finite ones within the bf16 error with this fix
    (``benchmarks/check_gpu_attention.py``).
    """
    if cache is not None:
        k, v = cached_kv(cache)
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    if isinstance(mask, Segments):
        mask = mask.dense(q.shape[1], k.shape[1])
    if not isinstance(mask, RowSpan):
        if window is not None:
            mask = mask & window_mask(window, q.shape[1], k.shape[1])[None]
        mask = mask | ~jnp.any(mask, axis=-1, keepdims=True)
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask[:, None], scale=scale, implementation=implementation
        )
    slots, start, length = k.shape[1], mask.start, mask.length
    out = jax.nn.dot_product_attention(
        shift_rows(q, start - mask.offset, slots),
        shift_rows(k, start, slots),
        shift_rows(v, start, slots),
        scale=scale,
        is_causal=True,
        query_seq_lengths=length,
        key_value_seq_lengths=length,
        local_window_size=None if window is None else (window[0] - 1, 0),
        implementation=implementation,
    )
    return shift_rows(out, mask.offset - start, q.shape[1])
