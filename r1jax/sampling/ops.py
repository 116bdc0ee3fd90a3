"""Pure per-step sampling functions: filter logits, draw a token, match stop sequences.

Everything here is a pure function of arrays, used inside the sampler's jitted decode loop
and directly by tests (fixed logits, many draws).

Shapes: B rows, V vocabulary, S stop sequences, W stop window (longest stop sequence).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.sampling.params import DeviceParams, SamplingParams, as_device_params

NEG_INF = -jnp.inf
WILDCARD = -1  # stop-sequence entry that matches anything (left padding of short sequences)
NO_TOKEN = -2  # content of the stop window before enough tokens were generated
NEVER = -3  # fills unused stop-sequence rows so that they never match


def filter_logprobs(logits: jax.Array, params: SamplingParams | DeviceParams) -> jax.Array:
    """Log-probs ``[B, V]`` of the sampling distribution (``-inf`` outside its support).

    Applies temperature, then top-k, then top-p (on the top-k renormalised distribution),
    then min-p, and renormalises. Ties at a cut-off are all kept. Not for greedy params
    (the greedy distribution is the point mass on the argmax).
    """
    p = as_device_params(params)
    scaled = logits.astype(jnp.float32) / p.temperature
    keep = jnp.ones(scaled.shape, bool)
    if p.truncate:
        v = scaled.shape[-1]
        ranks = jnp.arange(v)
        desc = -jnp.sort(-scaled, axis=-1)  # [B, V] largest first
        k = jnp.where(p.top_k > 0, jnp.minimum(p.top_k, v), v)
        in_top_k = ranks < k
        probs = jax.nn.softmax(jnp.where(in_top_k, desc, NEG_INF), axis=-1)
        mass_before = cumsum_last(probs) - probs
        kept = in_top_k & (mass_before < p.top_p)  # rank 0 always kept
        n_kept = jnp.maximum(jnp.sum(kept, axis=-1, keepdims=True), 1)
        cutoff = jnp.take_along_axis(desc, n_kept - 1, axis=-1)  # [B, 1]
        keep = scaled >= cutoff
    if p.use_min_p:
        top = jnp.max(scaled, axis=-1, keepdims=True)
        keep &= scaled >= top + jnp.log(p.min_p)
    return jax.nn.log_softmax(jnp.where(keep, scaled, NEG_INF), axis=-1)


def argmax_first(x: jax.Array) -> jax.Array:
    """Index of the first maximum over the last axis, ``[...]`` int32.

    Two plain reductions (max, then min over matching indices) instead of ``jnp.argmax``'s
    variadic reduction, which XLA:CPU runs several times slower.
    """
    return first_true(x == jnp.max(x, axis=-1, keepdims=True))


def first_true(cond: jax.Array) -> jax.Array:
    """Index of the first True over the last axis of ``cond [..., N]``, ``N`` where none is:
    ``[...]`` int32 (one min-reduction; see :func:`argmax_first`)."""
    iota = jax.lax.broadcasted_iota(jnp.int32, cond.shape, cond.ndim - 1)
    return jnp.min(jnp.where(cond, iota, cond.shape[-1]), axis=-1)


def last_true(cond: jax.Array) -> jax.Array:
    """Index of the last True over the last axis of ``cond [..., N]``, 0 where none is."""
    iota = jax.lax.broadcasted_iota(jnp.int32, cond.shape, cond.ndim - 1)
    return jnp.max(jnp.where(cond, iota, 0), axis=-1)


def cumsum_last(x: jax.Array, block: int = 32) -> jax.Array:
    """Inclusive cumulative sum over the last axis of ``x [B, V]`` (float32).

    Blocked: a ``[block, block]`` triangular matmul inside blocks plus a short cumsum over
    block totals. Much faster than ``jnp.cumsum`` over a long axis on CPU and exact in
    float32 on every backend (``Precision.HIGHEST``).
    """
    b, v = x.shape
    vp = -(-v // block) * block
    xb = jnp.pad(x, ((0, 0), (0, vp - v))).reshape(b, vp // block, block)
    tri = jnp.triu(jnp.ones((block, block), x.dtype))  # tri[i, j] = 1 for i <= j
    inner = jnp.einsum("bnc,cd->bnd", xb, tri, precision=jax.lax.Precision.HIGHEST)
    totals = inner[..., -1]
    offsets = jnp.cumsum(totals, axis=-1) - totals  # [B, V/block] exclusive
    return (inner + offsets[..., None]).reshape(b, vp)[:, :v]


def row_uniforms(key: jax.Array, rows: int) -> jax.Array:
    """One uniform number in ``[0, 1)`` per row: ``[rows, 1]`` float32. ``key`` is one PRNG
    key (row i takes element i of one draw of ``rows``) or ``[rows]`` keys, one per row (row
    i draws from its own key, whatever the other rows are)."""
    if key.ndim == 0:
        return jax.random.uniform(key, (rows, 1), jnp.float32)
    return jax.vmap(lambda k: jax.random.uniform(k, (1,), jnp.float32))(key)


def sample_from_logprobs(logp: jax.Array, key: jax.Array) -> jax.Array:
    """One draw per row from ``exp(logp [B, V])`` by inverse CDF: ``[B]`` int32.

    Needs one uniform number per row (the Gumbel-max trick of ``jax.random.categorical``
    needs V of them, which dominates a CPU decode step). The draw is the first token with
    positive probability whose cumulative probability reaches ``u * total``.
    """
    probs = jnp.exp(logp.astype(jnp.float32))
    cdf = cumsum_last(probs)
    u = row_uniforms(key, logp.shape[0]) * cdf[:, -1:]
    first = first_true((cdf >= u) & (probs > 0))
    return jnp.where(first < probs.shape[-1], first, argmax_first(probs))  # rounding guard


def sample_token(
    logits: jax.Array, key: jax.Array, params: SamplingParams | DeviceParams
) -> tuple[jax.Array, jax.Array]:
    """Draws one token per row of ``logits [B, V]`` with ``key``: one PRNG key, or ``[B]``
    keys, one per row (:func:`row_uniforms`).

    Returns ``(tokens [B] int32, logp_sampling [B] float32)``: the log-probability of each
    drawn token under the actual sampling distribution of :func:`filter_logprobs`
    (``0`` for greedy, whose distribution is the point mass on the argmax).
    """
    tokens, logp_sampling, _ = draw(logits, key, params)
    return tokens, logp_sampling


def draw(
    logits: jax.Array, key: jax.Array, params: SamplingParams | DeviceParams
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`sample_token` plus the policy log-prob of the drawn tokens (the decode loop's
    per-step work): ``(tokens [B] int32, logp_sampling [B], logp_policy [B])`` float32.

    Untruncated sampling shares its passes over the logits with the policy log-prob (one
    max, one fused read for both sets of block masses), so a decode step reads the ``[B, V]``
    logits twice after writing them.
    """
    p = as_device_params(params)
    if p.greedy:
        tokens = argmax_first(logits)
        return tokens, jnp.zeros(tokens.shape, jnp.float32), policy_logprob(logits, tokens)
    if p.truncate or p.use_min_p:
        logp = filter_logprobs(logits, p)
        tokens = sample_from_logprobs(logp, key)
        logp_sampling = jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]
        return tokens, logp_sampling, policy_logprob(logits, tokens)
    return _tempered_draw(logits, key, p.temperature, 256)


def block_size_for(v: int, block: int) -> int:
    """The block of :func:`sample_tempered`: ``block`` halved (down to 32) until it divides
    ``v``, so that the logits need no padding copy (151,936 = 1,187 * 128); ``block`` itself
    (and padding) when no such size divides."""
    b = block
    while b >= 32 and v % b:
        b //= 2
    return b if b >= 32 else block


def sample_tempered(
    logits: jax.Array, key: jax.Array, temperature: jax.Array | float, block: int = 256
) -> tuple[jax.Array, jax.Array]:
    """One draw per row from ``softmax(logits [B, V] / temperature)`` and its log-prob.

    Inverse CDF in two levels, so that no ``[B, V]`` array is written (on a GPU each pass
    over a 151k-vocabulary batch of logits is a sizeable part of a decode step): block
    masses ``[B, V/block]`` (one fused read of the logits after the max), the block where
    the cumulative mass passes ``u * total``, then that block's ``block`` entries, gathered.
    Token ``k`` is drawn iff ``cdf[k-1] <= u < cdf[k]``, so zero-probability tokens never
    are. ``block`` is adjusted by :func:`block_size_for`. Returns ``(tokens [B] int32,
    logp [B] float32)``.
    """
    tokens, logp, _ = _tempered_draw(logits, key, temperature, block)
    return tokens, logp


def _tempered_draw(
    logits: jax.Array, key: jax.Array, temperature: jax.Array | float, block: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`sample_tempered` and the policy log-prob: ``(tokens, logp, logp_policy)``."""
    b, v = logits.shape
    block = block_size_for(v, block)
    nb = -(-v // block)
    x = logits.astype(jnp.float32)
    top = jnp.max(x, axis=-1, keepdims=True)  # [B, 1]
    xp = (
        x if nb * block == v else jnp.pad(x, ((0, 0), (0, nb * block - v)), constant_values=NEG_INF)
    )
    shifted = xp.reshape(b, nb, block) - top[..., None]
    # sibling reductions of one input: XLA reads the logits once for both
    mass = jnp.sum(jnp.exp(shifted / temperature), -1)  # [B, nb]
    lse = top[:, 0] + jnp.log(jnp.sum(jnp.sum(jnp.exp(shifted), -1), -1))  # [B] policy
    cdf = jnp.cumsum(mass, axis=-1)  # [B, nb]
    u = row_uniforms(key, b) * cdf[:, -1:]
    j = first_true(cdf > u)  # [B]
    j = jnp.where(j < nb, j, last_true(mass > 0))  # rounding
    cols = j[:, None] * block + jnp.arange(block)[None]  # [B, block]
    inner = jnp.take_along_axis(x, jnp.minimum(cols, v - 1), axis=-1)
    w = jnp.where(cols < v, jnp.exp((inner - top) / temperature), 0.0)
    before = jnp.take_along_axis(cdf - mass, j[:, None], axis=-1)  # [B, 1]
    k = first_true((before + jnp.cumsum(w, -1) > u) & (w > 0))
    k = jnp.where(k < block, k, last_true(w > 0))  # rounding
    tokens = j * block + k
    chosen = jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]
    logp = (chosen - top[:, 0]) / temperature - jnp.log(cdf[:, -1])
    return tokens.astype(jnp.int32), logp, chosen - lse


def policy_logprob(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """``log_softmax(logits)[tokens]`` ``[B]`` in float32: the unmodified model distribution.

    Computed as ``logit - logsumexp`` (two reductions, no ``[B, V]`` output).
    """
    x = logits.astype(jnp.float32)
    top = jnp.max(x, axis=-1)
    lse = top + jnp.log(jnp.sum(jnp.exp(x - top[:, None]), axis=-1))
    return jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0] - lse


def stop_matches(window: jax.Array, stop_seqs: jax.Array) -> jax.Array:
    """Whether the last generated tokens end with any stop sequence: ``[B]`` bool.

    Args:
      window: ``[B, W]`` the last W generated tokens, oldest first (``NO_TOKEN`` before the
        start of the completion).
      stop_seqs: ``[S, W]`` right-aligned stop sequences, ``WILDCARD`` on the left of short
        ones, rows of ``NEVER`` for padding.
    """
    eq = (stop_seqs[None] == WILDCARD) | (window[:, None, :] == stop_seqs[None])  # [B, S, W]
    return jnp.any(jnp.all(eq, axis=-1), axis=-1)
