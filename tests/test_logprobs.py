"""Tests for r1jax.rl.logprobs: chunked log-probs vs naive full-logits references."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from grpo_reference import ref_token_logprobs

from r1jax.rl.logprobs import compute_dtype_head, token_logprobs

B, T, D, V = 2, 13, 8, 37


def _inputs(seed: int = 0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    hidden = jax.random.normal(k1, (B, T, D), jnp.float32)
    lm_head = jax.random.normal(k2, (D, V), jnp.float32) * 0.7
    targets = jax.random.randint(k3, (B, T), 0, V)
    return hidden, lm_head, targets


def _naive(hidden, lm_head, targets, temperature=1.0):
    """Full ``[B, T, V]`` logits: the memory-hungry formulation being replaced."""
    logits = (hidden.astype(jnp.float32) @ lm_head.astype(jnp.float32)) / temperature
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 13, 256])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_loop_reference_fp32(chunk_size, temperature):
    hidden, lm_head, targets = _inputs()
    logp, entropy = jax.jit(
        token_logprobs, static_argnames=("chunk_size", "compute_entropy", "temperature")
    )(
        hidden,
        lm_head,
        targets,
        chunk_size=chunk_size,
        compute_entropy=True,
        temperature=temperature,
    )
    want_logp, want_ent = ref_token_logprobs(
        np.asarray(hidden), np.asarray(lm_head), np.asarray(targets), temperature
    )
    assert logp.shape == (B, T) and logp.dtype == jnp.float32 and entropy.dtype == jnp.float32
    np.testing.assert_allclose(logp, want_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy, want_ent, rtol=1e-5, atol=1e-5)
    naive_logp, _ = _naive(hidden, lm_head, targets, temperature)
    np.testing.assert_allclose(logp, naive_logp, rtol=1e-5, atol=1e-5)


def test_entropy_off_returns_none():
    hidden, lm_head, targets = _inputs()
    logp, entropy = token_logprobs(hidden, lm_head, targets, chunk_size=4)
    assert entropy is None
    np.testing.assert_allclose(logp, _naive(hidden, lm_head, targets)[0], rtol=1e-5, atol=1e-5)


def test_bf16_hidden_and_head():
    hidden, lm_head, targets = _inputs(1)
    hidden, lm_head = hidden.astype(jnp.bfloat16), lm_head.astype(jnp.bfloat16)
    logp, entropy = token_logprobs(hidden, lm_head, targets, chunk_size=5, compute_entropy=True)
    assert logp.dtype == jnp.float32
    # Reference from the same bf16 values, exact products, float64 sums.
    want_logp, want_ent = ref_token_logprobs(
        np.asarray(hidden, np.float32), np.asarray(lm_head, np.float32), np.asarray(targets)
    )
    np.testing.assert_allclose(logp, want_logp, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(entropy, want_ent, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_size", [4, 13])
def test_gradients_match_naive(chunk_size, temperature):
    """Matrix heads take the hand-written backward pass (logp and entropy terms)."""
    hidden, lm_head, targets = _inputs(2)
    w = jax.random.normal(jax.random.key(3), (2, B, T))

    def objective(fn):
        def f(h, head):
            logp, ent = fn(h, head)
            return jnp.sum(w[0] * logp) + jnp.sum(w[1] * ent)

        return jax.jit(jax.grad(f, argnums=(0, 1)))

    chunked = objective(
        lambda h, head: token_logprobs(
            h, head, targets, chunk_size, compute_entropy=True, temperature=temperature
        )
    )
    naive = objective(lambda h, head: _naive(h, head, targets, temperature))
    for got, want in zip(chunked(hidden, lm_head), naive(hidden, lm_head), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_callable_head_tied_embedding_gradient():
    hidden, lm_head, targets = _inputs(4)
    embed = lm_head.T  # [V, D] tied embedding

    def loss(emb, fn):
        return jnp.sum(fn(emb)[0])

    chunked = lambda emb: token_logprobs(hidden, lambda h: h @ emb.T, targets, chunk_size=3)
    got = jax.grad(loss)(embed, chunked)
    want = jax.grad(loss)(embed, lambda emb: _naive(hidden, emb.T, targets))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _all_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Shapes of every value in a jaxpr, sub-jaxprs (scan, remat, pjit) included."""
    shapes = []
    for eqn in jaxpr.eqns:
        shapes += [tuple(v.aval.shape) for v in eqn.outvars]
        for param in eqn.params.values():
            subs = param if isinstance(param, (list, tuple)) else [param]
            for sub in subs:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    shapes += _all_shapes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    shapes += _all_shapes(sub)
    return shapes


def test_never_materialises_full_logits():
    """Forward + backward hold at most one ``[B, C, V]`` chunk of logits, never ``[B, T, V]``."""
    hidden, lm_head, targets = _inputs()
    chunk = 4

    def f(h, head):
        logp, ent = token_logprobs(h, head, targets, chunk, compute_entropy=True)
        return jnp.sum(logp) + jnp.sum(ent)

    shapes = _all_shapes(jax.make_jaxpr(jax.grad(f, argnums=(0, 1)))(hidden, lm_head).jaxpr)
    largest = max(int(np.prod(s)) for s in shapes)
    assert largest == B * chunk * V  # the chunk's logits, nothing bigger
    naive_shapes = _all_shapes(
        jax.make_jaxpr(
            jax.grad(lambda h, head: jnp.sum(_naive(h, head, targets)[0]), argnums=(0, 1))
        )(hidden, lm_head).jaxpr
    )
    assert max(int(np.prod(s)) for s in naive_shapes) == B * T * V  # the check can fail


def test_bad_input_raises():
    hidden, lm_head, targets = _inputs()
    with pytest.raises(ValueError, match="targets has shape"):
        token_logprobs(hidden, lm_head, targets[:, :3])
    with pytest.raises(ValueError, match="integer token ids"):
        token_logprobs(hidden, lm_head, targets.astype(jnp.float32))
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(hidden, lm_head, targets, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(hidden, lm_head, targets, temperature=0.0)
    with pytest.raises(ValueError, match="hidden must have shape"):
        token_logprobs(hidden[0], lm_head, targets)


def test_compute_dtype_head_mixed_precision():
    """bf16 hidden states with fp32 master weights: the projection runs on the bf16-cast
    weights (like the model's own logits), the weight gradient comes back in fp32 and equals
    the unchunked bf16-cast reference; with fp32 hidden states it is the plain matrix path."""
    hidden, lm_head, targets = _inputs(5)
    h16 = hidden.astype(jnp.bfloat16)

    def loss(w, h, head_of):
        return jnp.sum(token_logprobs(h, head_of(w), targets, chunk_size=4)[0])

    g = jax.jit(jax.grad(loss), static_argnums=2)(lm_head, h16, compute_dtype_head)
    assert g.dtype == jnp.float32
    w16 = lm_head.astype(jnp.bfloat16).astype(jnp.float32)  # what the bf16 GEMM multiplies
    want = jax.grad(lambda w: jnp.sum(_naive(h16.astype(jnp.float32), w, targets)[0]))(w16)
    np.testing.assert_allclose(g, want, rtol=2e-2, atol=2e-2)
    logp = token_logprobs(h16, compute_dtype_head(lm_head), targets, chunk_size=4)[0]
    np.testing.assert_allclose(logp, _naive(h16.astype(jnp.float32), w16, targets)[0], atol=2e-3)
    # fp32 compute: identical to passing the matrix
    same = token_logprobs(hidden, compute_dtype_head(lm_head), targets, chunk_size=4)[0]
    np.testing.assert_array_equal(same, token_logprobs(hidden, lm_head, targets, chunk_size=4)[0])


def test_traced_temperature_matches_naive():
    """A traced temperature cannot be static in the custom backward: the matrix and
    compute-dtype heads then take the autodiff path, with the same values and gradients."""
    hidden, lm_head, targets = _inputs(6)

    def loss(h, temperature, head_of):
        logp, ent = token_logprobs(h, head_of(lm_head), targets, 5, True, temperature)
        return jnp.sum(logp) + jnp.sum(ent)

    naive = jax.grad(lambda h: sum(jnp.sum(x) for x in _naive(h, lm_head, targets, 0.7)))(hidden)
    for head_of in (lambda w: w, compute_dtype_head):
        grad = jax.jit(jax.grad(loss), static_argnums=2)(hidden, jnp.float32(0.7), head_of)
        np.testing.assert_allclose(grad, naive, rtol=1e-5, atol=1e-5)
