"""The two jitted device programs of the sampler: prefill and the decode loop.

Shapes: Bp padded prompt batch, G samples per prompt, R = Bp * G decoded rows, P padded
prompt length (a bucket), N completion buffer length, V vocabulary.

* :func:`prefill` runs the model once over the left-padded prompts ``[Bp, P]`` with a
  length-P cache, then repeats the cache rows G times and appends the first decode
  segment's slots: each prompt is processed once, whatever G is.
* :func:`decode` samples token 0 from the prefill logits, then runs one-token forward
  passes (token i-1 is written at cache slot ``P + i - 1``) until every row has finished
  (end-of-sequence id, stop sequence, or the length limit), as a few consecutive
  ``jax.lax.while_loop`` segments: each runs on a cache of only the slots its steps can
  have written, grown once between segments, so a step does not read the empty rest of
  a ``P + N`` cache. With one segment the cache is donated and updated in place.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax.model import (
    ModelConfig,
    RowSpan,
    init_cache,
    positions_from_mask,
    prepare_for_decoding,
)
from r1jax.sampling import ops
from r1jax.sampling.params import DeviceParams

# finish codes on device; names on the host
LENGTH, EOS, STOP = 0, 1, 2
FINISH_NAMES = {LENGTH: "length", EOS: "eos", STOP: "stop"}


def cache_axes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """``{name: (slot_axis, kv_head_axis)}`` of the model's 4-D cache arrays (``"k"``,
    ``"v"``; batch first), read from :func:`init_cache` shapes so that the sampler follows
    the model's layout (keys and values may differ, e.g. ``[B, K, Dh, S]`` and
    ``[B, K, S, Dh]``)."""
    shapes = [jax.eval_shape(lambda n=n: init_cache(cfg, 2, n))[0] for n in (3, 5)]
    axes = {}
    for name in shapes[0]:
        a, b = shapes[0][name].shape, shapes[1][name].shape
        slot = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        kv = [i for i in range(1, len(a)) if i != slot and a[i] == cfg.num_kv_heads]  # first
        if len(a) != 4 or slot == 0 or not kv:
            raise ValueError(f"unexpected KV cache shape {a} for {name!r}: want 4-D, batch first")
        axes[name] = (slot, kv[0])
    return axes


def grow_cache(
    cfg: ModelConfig, cache: list[dict[str, jax.Array]], repeats: int, extra_slots: int
) -> list[dict[str, jax.Array]]:
    """Repeats every cache row ``repeats`` times (row ``i * repeats + j`` is a copy of row
    i) and appends ``extra_slots`` zero slots: ``[B, .., S, ..] -> [B * repeats, .., S +
    extra_slots, ..]`` along each array's slot axis (:func:`cache_axes`)."""
    axes = cache_axes(cfg)

    def grow(name: str, x: jax.Array) -> jax.Array:
        x = jnp.repeat(x, repeats, axis=0)
        pad = [(0, 0)] * x.ndim
        pad[axes[name][0]] = (0, extra_slots)
        return jnp.pad(x, pad)

    return [{name: grow(name, x) for name, x in layer.items()} for layer in cache]


def shared_prompt_cache(
    model: nnx.Module,
    tokens: jax.Array,
    mask: jax.Array,
    repeats: int,
    extra_slots: int,
    cache_dtype: Any,
) -> tuple[jax.Array, list[dict[str, jax.Array]]]:
    """Runs left-padded prompts ``tokens [B, P]`` (``mask [B, P]`` True on real tokens) once
    and returns their final hidden states ``[B, P, D]`` and a cache for ``B * repeats`` rows
    (row ``i * repeats + j`` shares prompt i) with the prompt in slots ``0..P-1`` and
    ``extra_slots`` empty slots after it. Used by prefill and by the GRPO update."""
    cache = init_cache(model.cfg, tokens.shape[0], tokens.shape[1], cache_dtype)
    hidden, cache = model(
        tokens,
        positions_from_mask(mask),  # < P: the rotary table is built per position
        RowSpan.from_mask(mask),
        cache,
        0,
        return_hidden=True,
        max_position=tokens.shape[1],
    )
    return hidden, grow_cache(model.cfg, cache, repeats, extra_slots)


def prefill(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    tokens: jax.Array,
    mask: jax.Array,
    num_samples: int,
    *,
    max_new_tokens: int,
    cache_dtype: Any,
    segments: int = 1,
) -> tuple[list[dict[str, jax.Array]], jax.Array, jax.Array]:
    """Prompt forward pass shared by the G samples of each prompt.

    Args:
      tokens: ``[Bp, P]`` left-padded prompt ids; ``mask``: ``[Bp, P]`` True on real tokens.
    Returns:
      ``(cache, logits, mask)``: the model's per-layer cache (:func:`init_cache` layout)
      for R rows and the first decode segment's slots (``P + N - 1`` with one segment, see
      :func:`decode`), holding the prompt keys and values in slots ``0..P-1``; the
      next-token logits ``[R, V]`` float32; the prompt mask ``[R, P]``. Row ``i * G + j``
      is sample j of prompt i.
    """
    model = nnx.merge(graphdef, state)
    extra = segment_ends(max_new_tokens, segments)[0] - 1
    hidden, cache = shared_prompt_cache(model, tokens, mask, num_samples, extra, cache_dtype)
    logits = model.logits(hidden[:, -1:])[:, 0]  # left padding: the last slot is real
    rep = functools.partial(jnp.repeat, repeats=num_samples, axis=0)
    return cache, rep(logits), rep(mask)


def segment_ends(max_new_tokens: int, segments: int) -> list[int]:
    """Exclusive step bounds of the decode loop's segments: steps ``1 .. N - 1`` (step 0 is
    sampled from the prefill logits) in ``segments`` spans as equal as possible, e.g.
    ``(64, 4) -> [17, 33, 49, 64]``; fewer segments when there are fewer steps."""
    if segments < 1:
        raise ValueError(f"decode segments={segments} must be >= 1")
    steps = max_new_tokens - 1
    k = max(1, min(segments, steps))
    return sorted({1 + -(-steps * (j + 1) // k) for j in range(k)})


def decode(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    cache: list[dict[str, jax.Array]],
    logits: jax.Array,
    prompt_mask: jax.Array,
    active: jax.Array,
    params: DeviceParams,
    eos_ids: jax.Array,
    stop_seqs: jax.Array,
    limit: jax.Array,
    key: jax.Array,
    draw_ids: jax.Array,
    pad_id: jax.Array,
    *,
    max_new_tokens: int,
    fuse: tuple[bool, bool] = (False, False),
    segments: int = 1,
) -> dict[str, jax.Array]:
    """Sampling loop over all rows at once.

    Args:
      cache: from :func:`prefill` (donated).
      logits: ``[R, V]`` next-token logits after the prompt.
      prompt_mask: ``[R, P]`` True on real prompt tokens.
      active: ``[R]`` bool; False on rows of batch padding (finished from the start).
      params: traced sampling knobs + static mode.
      eos_ids: ``[E]`` end-of-sequence ids (``-1`` padding).
      stop_seqs: ``[S, W]`` stop sequences, see :func:`r1jax.sampling.ops.stop_matches`.
      limit: ``[]`` int32 number of tokens to generate at most (<= N).
      key: the call's PRNG key.
      draw_ids: ``[R, 2]`` int32 ``(prompt id, sample index)`` of each row: token i of a
        row draws from ``fold_in(fold_in(fold_in(key, prompt id), sample index), i)``, so a
        row's draws do not depend on the other rows of the batch or on its place in it.
      pad_id: ``[]`` int32 id written after a row has finished.
      max_new_tokens: N (static); the last segment's cache has ``P + N - 1`` slots.
      fuse: static ``(fuse_qkv, fuse_mlp)`` of :func:`prepare_for_decoding`, applied once
        before the loop (the weights are cast to the compute dtype in any case).
      segments: the loop runs in this many consecutive ``while_loop`` s over equal spans of
        steps (static, :func:`segment_ends`). Each runs on a cache of the slots its steps
        can have written (``P +`` its last step): :func:`prefill` allocates the first
        segment's, and each later segment appends its own once. A step then reads those
        slots only, not all ``P + N``. More segments read less cache and compile more loop
        bodies.
    Returns:
      dict of ``tokens [R, N]`` int32, ``mask [R, N]`` bool, ``logp_policy [R, N]``,
      ``logp_sampling [R, N]`` float32 (0 where masked), ``finish [R]`` int32 code, and
      the final ``cache`` (returned so that the donated input buffers are updated in place).
    """
    model = nnx.merge(graphdef, state)
    prepare_for_decoding(model, fuse_qkv=fuse[0], fuse_mlp=fuse[1])
    rows, p = prompt_mask.shape
    n = max_new_tokens
    prompt_len = jnp.sum(prompt_mask, axis=-1, dtype=jnp.int32)  # [R]
    steps = jnp.arange(n)
    row_key = lambda ids: jax.random.fold_in(jax.random.fold_in(key, ids[0]), ids[1])
    row_keys = jax.vmap(row_key)(draw_ids)  # [R]

    def emit(i: jax.Array, logits: jax.Array, c: dict[str, Any]) -> dict[str, Any]:
        """Samples token i of every row from ``logits [R, V]`` and records it."""
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(row_keys, i)  # [R]
        tok, lp_s, lp_p = ops.draw(logits, step_keys, params)
        alive = ~c["done"]
        tok = jnp.where(alive, tok, pad_id)
        window = jnp.concatenate([c["window"][:, 1:], tok[:, None]], axis=1)
        is_eos = alive & jnp.any(tok[:, None] == eos_ids[None], axis=-1)
        is_stop = alive & ~is_eos & ops.stop_matches(window, stop_seqs)

        def put(buf: jax.Array, col: jax.Array) -> jax.Array:
            return jax.lax.dynamic_update_slice(buf, col[:, None].astype(buf.dtype), (0, i))

        zero = jnp.zeros_like(lp_p)
        return dict(
            c,
            last=tok,
            window=window,
            tokens=put(c["tokens"], tok),
            mask=put(c["mask"], alive),
            logp_policy=put(c["logp_policy"], jnp.where(alive, lp_p, zero)),
            logp_sampling=put(c["logp_sampling"], jnp.where(alive, lp_s, zero)),
            done=c["done"] | is_eos | is_stop,
            finish=jnp.where(is_eos, EOS, jnp.where(is_stop, STOP, c["finish"])),
        )

    def segment(end: int) -> tuple[Any, Any]:
        """Loop condition and body for steps ``i < end``, over a cache of ``P + end - 1``
        slots: step i writes slot ``P + i - 1`` and attends over every slot up to it."""
        written = end - 1  # generated slots in this segment's cache

        def cond(c: dict[str, Any]) -> jax.Array:
            return (c["i"] < jnp.minimum(limit, end)) & ~jnp.all(c["done"])

        def body(c: dict[str, Any]) -> dict[str, Any]:
            i = c["i"]
            key_mask = jnp.concatenate(
                [prompt_mask, jnp.broadcast_to(steps[:written] < i, (rows, written))], axis=1
            )  # slots 0..P-1: real prompt tokens; P..P+i-1: generated so far
            out, cache = model(
                c["last"][:, None],
                (prompt_len + i - 1)[:, None],
                key_mask[:, None, :],
                c["cache"],
                p + i - 1,
            )
            c = emit(i, out[:, 0], dict(c, cache=cache))
            return dict(c, i=i + 1)

        return cond, body

    init = dict(
        i=jnp.int32(0),
        cache=cache,
        last=jnp.zeros((rows,), jnp.int32),
        window=jnp.full((rows, stop_seqs.shape[1]), ops.NO_TOKEN, jnp.int32),
        tokens=jnp.full((rows, n), pad_id, jnp.int32),
        mask=jnp.zeros((rows, n), bool),
        logp_policy=jnp.zeros((rows, n), jnp.float32),
        logp_sampling=jnp.zeros((rows, n), jnp.float32),
        done=~active,
        finish=jnp.full((rows,), LENGTH, jnp.int32),
    )
    c = dict(emit(jnp.int32(0), logits, init), i=jnp.int32(1))
    ends = segment_ends(n, segments)
    have = cache[0]["k"].shape[cache_axes(model.cfg)["k"][0]]
    if have != p + ends[0] - 1:
        raise ValueError(
            f"decode: the cache has {have} slots, the first of {len(ends)} segments needs "
            f"{p + ends[0] - 1} (prefill with the same max_new_tokens and segments)"
        )
    for j, end in enumerate(ends):
        if j:  # the next segment's slots, appended once (a copy per segment, not per step)
            c = dict(c, cache=grow_cache(model.cfg, c["cache"], 1, end - ends[j - 1]))
        c = jax.lax.while_loop(*segment(end), c)
    keys = ("tokens", "mask", "logp_policy", "logp_sampling", "finish", "cache")
    return {k: c[k] for k in keys}
