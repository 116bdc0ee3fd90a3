"""``RowSpan`` masks and the row shifts behind the span form of library attention: the span
equals the dense causal mask it replaces, ``shift_rows`` and its hand-written gradient equal
a loop reference, and span attention equals dense-mask attention (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import RowSpan, causal_mask
from r1jax.model.attention import library_attention, shift_rows
from r1jax.rl.step import check_rows_contiguous

L = 12


def _contiguous_masks(rows=6, seed=0):
    """Left padding 0..3, right padding 0..3, one row with no padding, one all-real."""
    rng = np.random.RandomState(seed)
    mask = np.zeros((rows, L), bool)
    for i in range(rows):
        left, right = (0, 0) if i == 0 else (rng.randint(0, 4), rng.randint(0, 4))
        mask[i, left : L - right] = True
    return mask


@pytest.mark.parametrize("offset", [0, 4, 7])
def test_span_dense_equals_causal_mask(offset):
    mask = _contiguous_masks()
    queries = L - offset
    span = RowSpan.from_mask(jnp.asarray(mask), offset)
    want = np.asarray(causal_mask(jnp.asarray(mask)))[:, offset:, :]
    np.testing.assert_array_equal(np.asarray(span.dense(queries, L)), want)


def _shift_reference(x, shift, length):
    y = np.zeros((x.shape[0], length) + x.shape[2:], x.dtype)
    for b in range(x.shape[0]):
        for j in range(length):
            if 0 <= j + shift[b] < x.shape[1]:
                y[b, j] = x[b, j + shift[b]]
    return y


@pytest.mark.parametrize("length", [5, L, 15])
def test_shift_rows_values_and_gradient(length):
    rng = np.random.RandomState(1)
    x = rng.randn(4, L, 3).astype(np.float32)
    shift = np.array([0, 3, -2, 11], np.int32)
    w = rng.randn(4, length, 3).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(shift_rows(jnp.asarray(x), jnp.asarray(shift), length)),
        _shift_reference(x, shift, length),
    )
    grad = jax.grad(lambda x: jnp.sum(shift_rows(x, jnp.asarray(shift), length) * w))(x)
    # d/dx of sum(shift(x) * w): each x[b, i] collects w[b, i - shift[b]] where that exists
    want = _shift_reference(w, -shift, L)
    np.testing.assert_allclose(np.asarray(grad), want, rtol=0, atol=0)


@pytest.mark.parametrize("offset", [0, 5])
def test_span_attention_equals_dense_mask_attention(offset):
    """Real queries: same outputs and same gradients w.r.t. q, k, v (GQA: 4 heads on 2)."""
    mask = _contiguous_masks(seed=2)
    rng = np.random.RandomState(3)
    t = L - offset
    q = jnp.asarray(rng.randn(mask.shape[0], t, 4, 8), jnp.float32)
    k, v = (jnp.asarray(rng.randn(mask.shape[0], L, 2, 8), jnp.float32) for _ in range(2))
    q_real = jnp.asarray(mask[:, offset:, None, None])
    w = jnp.asarray(rng.randn(*q.shape), jnp.float32) * q_real

    def loss(q, k, v, attn_mask):
        out = library_attention(q, k, v, None, attn_mask, "xla")
        return jnp.sum(jnp.where(q_real, out, 0.0) * w), out

    dense = jnp.asarray(causal_mask(jnp.asarray(mask)))[:, offset:, :]
    span = RowSpan.from_mask(jnp.asarray(mask), offset)
    value_and_grad = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))
    (l_d, out_d), g_d = value_and_grad(q, k, v, dense)
    (l_s, out_s), g_s = value_and_grad(q, k, v, span)
    real = mask[:, offset:]
    np.testing.assert_allclose(np.asarray(out_s)[real], np.asarray(out_d)[real], atol=1e-5)
    np.testing.assert_allclose(float(l_s), float(l_d), rtol=1e-5)
    for a, b in zip(g_s, g_d, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_rows_with_a_gap_are_named():
    mask = _contiguous_masks()
    check_rows_contiguous(mask)
    check_rows_contiguous(np.zeros((2, L), bool))  # empty rows are fine
    mask[3, :] = True
    mask[3, 6] = False
    with pytest.raises(ValueError, match="input_mask row 3 .* 11 real tokens .* slots 0..11"):
        check_rows_contiguous(mask)


def test_dense_rows_without_keys_attend_every_key():
    """cuDNN gave NaN gradients for query rows with no key; such rows now see every key."""
    rng = np.random.RandomState(4)
    q = jnp.asarray(rng.randn(2, 3, 4, 8), jnp.float32)
    k, v = (jnp.asarray(rng.randn(2, 3, 2, 8), jnp.float32) for _ in range(2))
    mask = np.tril(np.ones((3, 3), bool))[None].repeat(2, 0)
    mask[1, 0] = False  # row 1's first query has no key
    full = mask.copy()
    full[1, 0] = True
    got = library_attention(q, k, v, None, jnp.asarray(mask), "xla")
    want = library_attention(q, k, v, None, jnp.asarray(full), "xla")
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
