"""The model's hand-written backwards: ``dense``, ``swiglu`` and the rotary embedding, against
autodiff of the plain formulas (and a float64 NumPy product for ``dense``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model.ops import apply_rope, dense, rope_table, swiglu


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "contract"),
    [
        ((3, 5, 8), (8, 12), 1),  # K < N: the backward transposes x
        ((3, 5, 12), (12, 8), 1),  # K > N: it transposes g and the product
        ((2, 4, 8), (8, 3, 4), 1),  # q/k/v projections [D, H, Dh]
        ((2, 4, 3, 4), (3, 4, 8), 2),  # output projection [H, Dh, D]
    ],
)
def test_dense_value_and_gradients(x_shape, w_shape, contract):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape)
    w = jax.random.normal(kw, w_shape)
    out_shape = x_shape[: len(x_shape) - contract] + w_shape[contract:]
    probe = jax.random.normal(kg, out_shape)

    xs = "abcd"[: len(x_shape) - contract]
    ks = "klm"[:contract]
    ns = "xyz"[: len(w_shape) - contract]
    spec = f"{xs}{ks},{ks}{ns}->{xs}{ns}"

    y = dense(x, w, contract)
    ref = np.einsum(spec, np.float64(x), np.float64(w))
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)

    def loss(f):
        return lambda x, w: jnp.sum(f(x, w) * probe)

    got = jax.grad(loss(lambda x, w: dense(x, w, contract)), argnums=(0, 1))(x, w)
    want = jax.grad(loss(lambda x, w: jnp.einsum(spec, x, w)), argnums=(0, 1))(x, w)
    for g, r in zip(got, want, strict=True):
        assert g.shape == r.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-5)


def test_dense_keeps_the_compute_dtype_and_names_a_shape_mismatch():
    x = jnp.ones((2, 3, 8), jnp.bfloat16)
    w = jnp.ones((8, 4), jnp.bfloat16)
    assert dense(x, w).dtype == jnp.bfloat16
    gx, gw = jax.grad(lambda x, w: jnp.sum(dense(x, w).astype(jnp.float32)), (0, 1))(x, w)
    assert gx.dtype == gw.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match=r"does not end in the weight's input axes \(6,\)"):
        dense(x, jnp.ones((6, 4)))


def _plain_rope(x, positions, inv_freq):
    """The formula, differentiated by autodiff (the reference for the custom backward)."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    cos, sin = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def test_rope_backward_is_the_inverse_rotation():
    kx, kg = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (2, 5, 3, 8))
    probe = jax.random.normal(kg, x.shape)
    positions = jnp.array([[0, 1, 2, 3, 4], [0, 0, 7, 100, 1000]])
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, 8, 2, dtype=jnp.float32) / 8))

    got_y = apply_rope(x, rope_table(positions, inv_freq))
    want_y = _plain_rope(x, positions, inv_freq)
    np.testing.assert_allclose(np.asarray(got_y), np.asarray(want_y), rtol=1e-6, atol=1e-6)

    got = jax.grad(lambda x: jnp.sum(apply_rope(x, rope_table(positions, inv_freq)) * probe))(x)
    want = jax.grad(lambda x: jnp.sum(_plain_rope(x, positions, inv_freq) * probe))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_swiglu_value_and_gradients(dtype):
    kg, ku, kp = jax.random.split(jax.random.key(2), 3)
    g = (3 * jax.random.normal(kg, (4, 6, 16))).astype(dtype)
    u = jax.random.normal(ku, (4, 6, 16)).astype(dtype)
    probe = jax.random.normal(kp, (4, 6, 16)).astype(dtype)

    def plain(g, u):
        return jax.nn.silu(g) * u

    assert swiglu(g, u).dtype == dtype
    np.testing.assert_array_equal(np.asarray(swiglu(g, u)), np.asarray(plain(g, u)))

    def grads(f, g, u):
        return jax.grad(lambda g, u: jnp.sum((f(g, u) * probe).astype(jnp.float32)), (0, 1))(g, u)

    # the reference in float32: the custom backward computes in float32 for any input dtype
    want = grads(plain, g.astype(jnp.float32), u.astype(jnp.float32))
    got = grads(swiglu, g, u)
    tol = 1e-5 if dtype == jnp.float32 else 1e-2
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), rtol=tol, atol=tol)


def test_rope_table_per_position_equals_per_token():
    positions = jnp.array([[0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5]], jnp.int32)
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, 16, 2, dtype=jnp.float32) / 16))
    per_token = rope_table(positions, inv_freq)
    per_position = rope_table(positions, inv_freq, max_position=6)
    assert per_position.cos.shape == per_token.cos.shape == (2, 6, 1, 8)
    np.testing.assert_allclose(per_position.cos, per_token.cos, rtol=0, atol=1e-7)
    np.testing.assert_allclose(per_position.sin, per_token.sin, rtol=0, atol=1e-7)
    # a position past the stated bound reads NaN, never a wrong angle
    assert np.isnan(np.asarray(rope_table(positions, inv_freq, max_position=5).cos[1, 5])).all()
