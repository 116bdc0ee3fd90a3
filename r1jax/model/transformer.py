"""Decoder-only transformer (Qwen2/2.5, Qwen3, Llama 3.x, Gemma 1/2/3) in Flax NNX.

Every parameter is an ``nnx.Param`` carrying ``logical_axes`` metadata (names such as
``embed``, ``heads``, ``mlp``, ``vocab``); :mod:`r1jax.sharding` maps them onto mesh axes.

Shapes: B batch, T query length, S key length (T without a cache, the cache length with one),
D hidden, H query heads, K kv heads, Dh head dim, I MLP width, V vocabulary.

The forward pass takes explicit ``positions [B, T]`` (so left-padded batches get correct
rotary phases) and an explicit attention mask: a boolean ``[B, T, S]`` array (build it with
:func:`causal_mask`, or let the sampler build it for cached decoding) or a
:class:`~r1jax.model.attention.RowSpan` for rows whose real tokens are one contiguous run
(the form cuDNN attention runs fastest; see :mod:`r1jax.model.attention`), or a
:class:`~r1jax.model.attention.Segments` mask for packed rows.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from r1jax import sharding as shd
from r1jax.model.attention import (
    Mask,
    RowSpan,
    einsum_attention,
    library_attention,
)
from r1jax.model.config import ModelConfig
from r1jax.model.lora import merge_lora, project
from r1jax.model.ops import Rope, apply_rope, dense, rope_table, softcap, swiglu
from r1jax.model.splash import splash_attention

KVCache = list[dict[str, jax.Array]]  # per layer {"k": [B, K, Dh, S], "v": [B, K, S, Dh]}

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _param(
    rngs: nnx.Rngs,
    init: Any,
    shape: tuple[int, ...],
    axes: tuple[str | None, ...],
    dtype: jnp.dtype,
) -> nnx.Param:
    return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=axes)


def _normal(std: float = 0.02):
    return jax.nn.initializers.normal(std)


def positions_from_mask(input_mask: jax.Array) -> jax.Array:
    """Positions ``[B, T]`` for a left-padded batch: 0 at the first real token."""
    return jnp.maximum(jnp.cumsum(input_mask.astype(jnp.int32), axis=-1) - 1, 0)


def rope_inv_freq(cfg: ModelConfig, sliding: bool = False) -> jax.Array:
    """Inverse rotary frequencies ``[Dh/2]`` in float32, with Llama-3 or linear scaling when
    configured; ``sliding``: those of the sliding-window layers (``rope_local_theta``,
    unscaled)."""
    dim = cfg.head_dim
    theta = cfg.rope_local_theta if sliding and cfg.rope_local_theta else cfg.rope_theta
    inv = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    if sliding and cfg.rope_local_theta:
        return inv
    inv = inv / cfg.rope_linear_factor
    rs = cfg.rope_scaling
    if rs is None:
        return inv
    low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
    high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > low_wavelen, inv / rs.factor, inv)
    smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
        rs.high_freq_factor - rs.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


class RMSNorm(nnx.Module):
    """RMS normalisation over the last axis, computed in float32."""

    def __init__(self, dim: int, eps: float, cfg: ModelConfig, *, axis_name: str = "norm"):
        self.eps = eps
        self.offset = cfg.norm_offset  # Gemma stores w with the scale 1 + w (initially 0)
        init = jnp.full((dim,), 1.0 - cfg.norm_offset, cfg.param_dtype)
        self.weight = nnx.Param(init, logical_axes=(axis_name,))

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return ((self.offset + self.weight[...].astype(jnp.float32)) * xf).astype(x.dtype)


class Attention(nnx.Module):
    """Grouped-query attention with rotary embeddings, optional qkv bias and q/k norm; layer
    ``layer`` of a model with sliding-window layers attends within the window if it is one."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, layer: int = 0):
        self.cfg = cfg
        self.window = cfg.sliding_window if cfg.is_sliding(layer) else None
        d, h, k, hd, pd = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.param_dtype,
        )
        init = _normal()
        self.q = _param(rngs, init, (d, h, hd), ("embed", "heads", "head_dim"), pd)
        self.k = _param(rngs, init, (d, k, hd), ("embed", "kv_heads", "head_dim"), pd)
        self.v = _param(rngs, init, (d, k, hd), ("embed", "kv_heads", "head_dim"), pd)
        self.o = _param(rngs, init, (h, hd, d), ("heads", "head_dim", "embed"), pd)
        if cfg.qkv_bias:
            zeros = jax.nn.initializers.zeros
            self.q_bias = _param(rngs, zeros, (h, hd), ("heads", "head_dim"), pd)
            self.k_bias = _param(rngs, zeros, (k, hd), ("kv_heads", "head_dim"), pd)
            self.v_bias = _param(rngs, zeros, (k, hd), ("kv_heads", "head_dim"), pd)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg, axis_name="head_dim")
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg, axis_name="head_dim")

    def _project(self, x: jax.Array, name: str) -> jax.Array:
        y = project(self, name, x)
        if self.cfg.qkv_bias:
            y = y + getattr(self, f"{name}_bias")[...].astype(x.dtype)
        return y

    def _project_fused(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q, k, v ``[B, T, H|K, Dh]`` from one GEMM with ``qkv [D, H + 2K, Dh]``."""
        h, kv = self.cfg.num_heads, self.cfg.num_kv_heads
        y = dense(x, self.qkv[...])
        if self.cfg.qkv_bias:
            y = y + self.qkv_bias[...]
        return y[:, :, :h], y[:, :, h : h + kv], y[:, :, h + kv :]

    def __call__(
        self,
        x: jax.Array,
        rope: Rope,
        attn_mask: Mask,
        cache: dict[str, jax.Array] | None = None,
        cache_slot: jax.Array | int | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array] | None]:
        """``x [B, T, D]``, ``attn_mask [B, T, S]`` or a span -> ``([B, T, D], new cache)``."""
        cfg = self.cfg
        if hasattr(self, "qkv"):  # set by prepare_for_decoding
            q, k, v = self._project_fused(x)
        else:
            q, k, v = (self._project(x, n) for n in ("q", "k", "v"))
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, rope)
        k = apply_rope(k, rope)
        if cache is not None:
            cache = write_cache(cache, k, v, cache_slot)
        scale = (cfg.query_pre_attn_scalar or cfg.head_dim) ** -0.5
        window = None
        if self.window is not None:  # query t sits at slot cache_slot + t
            window = (self.window, 0 if cache is None else cache_slot)
        if cfg.attention == "einsum" or q.shape[1] == 1:  # decode steps always use einsum
            out = einsum_attention(q, k, v, cache, attn_mask, scale, cfg.attn_softcap, window)
        elif cfg.attention == "splash":
            out = splash_attention(q, k, v, cache, attn_mask, scale, cfg.attn_softcap, self.window)
        else:
            out = library_attention(q, k, v, cache, attn_mask, cfg.attention, scale, window)
        return project(self, "o", out), cache


def write_cache(
    cache: dict[str, jax.Array], k: jax.Array, v: jax.Array, slot: jax.Array | int
) -> dict[str, jax.Array]:
    """Writes ``k, v [B, T, K, Dh]`` at slots ``slot .. slot + T - 1`` of one layer's cache.

    Cached keys are ``[B, K, Dh, S]`` (slots minor): the one-token decode score dot is ~3x
    faster on CPU in isolation than with ``[B, K, S, Dh]``; values stay ``[B, K, S, Dh]``.
    """
    k = k.transpose(0, 2, 3, 1).astype(cache["k"].dtype)  # [B, K, Dh, T]
    v = v.transpose(0, 2, 1, 3).astype(cache["v"].dtype)  # [B, K, T, Dh]
    return {
        "k": jax.lax.dynamic_update_slice(cache["k"], k, (0, 0, 0, slot)),
        "v": jax.lax.dynamic_update_slice(cache["v"], v, (0, 0, slot, 0)),
    }


class MLP(nnx.Module):
    """Gated feed-forward: ``down(act(gate(x)) * up(x))``, SwiGLU (silu) or GeGLU (tanh
    GELU, Gemma)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, i, pd = cfg.hidden_size, cfg.intermediate_size, cfg.param_dtype
        self.activation = cfg.mlp_activation
        self.gate = _param(rngs, _normal(), (d, i), ("embed", "mlp"), pd)
        self.up = _param(rngs, _normal(), (d, i), ("embed", "mlp"), pd)
        self.down = _param(rngs, _normal(), (i, d), ("mlp", "embed"), pd)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = x.dtype
        if hasattr(self, "gate_up"):  # set by prepare_for_decoding: one GEMM, [..., 2, I]
            gu = dense(x, self.gate_up[...].astype(dt))
            g, u = gu[..., 0, :], gu[..., 1, :]
        else:
            g, u = project(self, "gate", x), project(self, "up", x)
        if self.activation == "gelu_tanh":
            return project(self, "down", jax.nn.gelu(g, approximate=True) * u)
        return project(self, "down", swiglu(g, u))


class Block(nnx.Module):
    """Pre-norm decoder block: attention and MLP with residual connections (``post_attn_norm``
    is the MLP's input norm); with ``sandwich_norms`` (Gemma 2, 3) their outputs are normed
    too (``attn_out_norm``, ``mlp_out_norm``) before the residual adds."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, layer: int = 0):
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.input_norm = RMSNorm(d, eps, cfg)
        self.attn = Attention(cfg, rngs=rngs, layer=layer)
        self.post_attn_norm = RMSNorm(d, eps, cfg)
        self.mlp = MLP(cfg, rngs=rngs)
        self.sliding = cfg.is_sliding(layer)
        if cfg.sandwich_norms:
            self.attn_out_norm = RMSNorm(d, eps, cfg)
            self.mlp_out_norm = RMSNorm(d, eps, cfg)

    def __call__(self, x, ropes, attn_mask, cache=None, cache_slot=None):
        """``ropes``: the rotary tables of the full and the sliding layers (``(full,
        sliding)``; the same table twice when they share one)."""
        rope = ropes[1] if self.sliding else ropes[0]
        h, cache = self.attn(self.input_norm(x), rope, attn_mask, cache, cache_slot)
        if hasattr(self, "attn_out_norm"):
            h = self.attn_out_norm(h)
        x = x + h
        h = self.mlp(self.post_attn_norm(x))
        if hasattr(self, "mlp_out_norm"):
            h = self.mlp_out_norm(h)
        return x + h, cache


class Transformer(nnx.Module):
    """The decoder. Call returns logits ``[B, T, V]`` (or final hidden states) and the cache."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, build_layers: bool = True):
        """``build_layers=False`` leaves ``layers`` empty (``create_model`` fills them in)."""
        self.cfg = cfg
        pd = cfg.param_dtype
        self.embed = _param(
            rngs, _normal(), (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pd
        )
        n = cfg.num_layers if build_layers else 0
        self.layers = nnx.List([Block(cfg, rngs=rngs, layer=i) for i in range(n)])
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg)
        if cfg.num_labels:  # a reward model / classifier: no language-model head
            shape = (cfg.hidden_size, cfg.num_labels)
            self.score = _param(rngs, _normal(), shape, ("embed", None), pd)
        elif not cfg.tie_word_embeddings:
            self.lm_head = _param(
                rngs, _normal(), (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pd
            )

    def lm_head_weight(self) -> jax.Array:
        """Output projection ``[D, V]`` (the transposed embedding when tied)."""
        if self.cfg.num_labels:
            raise ValueError(
                f"this model is a classifier (num_labels={self.cfg.num_labels}): it has a score "
                "head, no language-model head"
            )
        if self.cfg.tie_word_embeddings:
            return self.embed[...].T
        return self.lm_head[...]

    def logits(self, hidden: jax.Array) -> jax.Array:
        """``[B, T, D]`` final hidden states -> ``[B, T, V]`` float32 logits (soft-capped with
        ``final_softcap``)."""
        w = self.lm_head_weight().astype(hidden.dtype)
        logits = jnp.einsum("btd,dv->btv", hidden, w, preferred_element_type=jnp.float32)
        return softcap(logits, self.cfg.final_softcap)

    def sequence_scores(self, tokens: jax.Array, input_mask: jax.Array) -> jax.Array:
        """Classifier / reward-model output: ``score`` applied to the final hidden state of
        each row's last real token, as HF ``*ForSequenceClassification`` pools.

        Args:
          tokens: ``[B, T]`` int token ids.
          input_mask: ``[B, T]`` bool, True on real tokens; each row's real tokens are one
            contiguous run (left or right padding). A row needs at least one (a row with
            none is scored at slot ``T - 1``, meaninglessly).
        Returns:
          ``[B, num_labels]`` float32.
        """
        if not self.cfg.num_labels:
            raise ValueError("sequence_scores needs a model with a score head (num_labels > 0)")
        t = tokens.shape[1]
        positions = positions_from_mask(input_mask)
        hidden, _ = self(tokens, positions, RowSpan.from_mask(input_mask), return_hidden=True,
                         max_position=t)  # fmt: skip
        last = t - 1 - jnp.argmax(input_mask[:, ::-1], axis=1)  # [B]
        pooled = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, D]
        w = self.score[...].astype(pooled.dtype)
        return jnp.einsum("bd,dl->bl", pooled, w, preferred_element_type=jnp.float32)

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        attn_mask: Mask,
        cache: KVCache | None = None,
        cache_slot: jax.Array | int | None = None,
        return_hidden: bool = False,
        max_position: int | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Forward pass.

        Args:
          tokens: ``[B, T]`` int token ids.
          positions: ``[B, T]`` int rotary positions.
          attn_mask: ``[B, T, S]`` bool, True where query t may attend key s, or a
            :class:`~r1jax.model.attention.RowSpan` (the same for one contiguous run of
            real slots per row, query t at slot ``offset + t``) or
            :class:`~r1jax.model.attention.Segments` (packed rows, no cache); splash
            attention takes only the latter two.
          cache: optional per-layer KV cache with ``S`` slots; the T new keys/values are
            written at slots ``cache_slot .. cache_slot + T - 1`` before attending.
          return_hidden: return final-normed hidden states ``[B, T, D]`` instead of logits.
          max_position: optional static bound on ``positions`` (all ``< max_position``, e.g.
            the row length when they come from :func:`positions_from_mask`): the rotary
            table is then built per position, not per token (see :func:`rope_table`).
        Returns:
          ``(logits [B, T, V] float32 | hidden [B, T, D], new cache or None)``.
        """
        cfg = self.cfg
        table = shd.gather_rows_of(self.embed[...])
        x = shd.constrain_batch(jnp.take(table, tokens, axis=0).astype(cfg.dtype))
        if cfg.embed_scale:  # (the factor rounded to the compute dtype, as Gemma does)
            x = x * jnp.asarray(math.sqrt(cfg.hidden_size), cfg.dtype)
        rope = rope_table(positions, rope_inv_freq(cfg), max_position)
        ropes = (rope, rope)
        if cfg.rope_local_theta and any(cfg.is_sliding(i) for i in range(cfg.num_layers)):
            ropes = (rope, rope_table(positions, rope_inv_freq(cfg, sliding=True), max_position))
        new_cache: KVCache | None = [] if cache is not None else None
        for i, block in enumerate(self.layers):
            layer_cache = cache[i] if cache is not None else None
            if cfg.remat != "none":
                # jax.checkpoint of the block's state, not nnx.remat of the block: nnx.remat
                # writes the variables back, which Flax refuses when they come from an outer
                # trace (frozen LoRA bases outside jax.grad, a model merged outside the
                # sampler's while_loop)
                graph, state = nnx.split(block)
                fn = jax.checkpoint(lambda st, *a, g=graph: nnx.merge(g, st)(*a),
                                    policy=_REMAT_POLICIES[cfg.remat])  # fmt: skip
                x, layer_cache = fn(state, x, ropes, attn_mask, layer_cache, cache_slot)
            else:
                x, layer_cache = block(x, ropes, attn_mask, layer_cache, cache_slot)
            if new_cache is not None:
                new_cache.append(layer_cache)
        x = self.final_norm(x)
        if return_hidden:
            return x, new_cache
        return self.logits(x), new_cache


def prepare_for_decoding(model: Transformer, *, fuse_qkv: bool, fuse_mlp: bool) -> None:
    """Rewrites a model's weights in place for a decode loop.

    LoRA adapters are folded into their weights, stored in the compute dtype
    (:func:`~r1jax.model.lora.merge_lora`). Weight matrices are cast to the compute dtype once
    (instead of at every step), and the projections that read the same input become one GEMM
    each: ``gate``/``up`` -> ``gate_up [D, 2, I]`` (with ``fuse_mlp``) and ``q``/``k``/``v``
    -> ``qkv [D, H + 2K, Dh]`` plus ``qkv_bias`` (with ``fuse_qkv``; only where heads are not
    split over a mesh axis, since the concatenation would mix shards). The results equal the
    unfused model's.

    Call it on a model merged inside the jitted program, before the ``while_loop``: XLA does
    not hoist the concatenations out of the loop, so built in the step they cost a copy of
    the weights per step. The fused copies take extra memory for the call (about the size of
    the q/k/v/gate/up weights in the compute dtype); the original weights stay, unused.
    """
    dt = model.cfg.dtype
    merge_lora(model, dtype=dt)

    def cast(x: jax.Array) -> nnx.Param:
        return nnx.Param(x.astype(dt))

    model.embed = cast(model.embed[...])
    if not model.cfg.tie_word_embeddings and not model.cfg.num_labels:
        model.lm_head = cast(model.lm_head[...])
    for block in model.layers:
        attn, mlp = block.attn, block.mlp
        attn.o = cast(attn.o[...])
        mlp.down = cast(mlp.down[...])
        if fuse_mlp:
            mlp.gate_up = cast(jnp.stack([mlp.gate[...], mlp.up[...]], axis=1))
        if fuse_qkv:
            attn.qkv = cast(jnp.concatenate([attn.q[...], attn.k[...], attn.v[...]], axis=1))
            if model.cfg.qkv_bias:
                biases = [attn.q_bias[...], attn.k_bias[...], attn.v_bias[...]]
                attn.qkv_bias = cast(jnp.concatenate(biases, axis=0))


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Any = None) -> KVCache:
    """Zeroed KV cache: per layer keys ``"k" [batch, K, Dh, length]`` and values
    ``"v" [batch, K, length, Dh]``."""
    dtype = dtype or cfg.dtype
    k, hd = cfg.num_kv_heads, cfg.head_dim
    return [
        {
            "k": jnp.zeros((batch, k, hd, length), dtype),
            "v": jnp.zeros((batch, k, length, hd), dtype),
        }
        for _ in range(cfg.num_layers)
    ]
