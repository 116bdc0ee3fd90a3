"""Tests for r1jax.rl.advantages against hand-checked values and a loop reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from grpo_reference import ref_advantages

from r1jax.rl.advantages import compute_advantages, group_stats, select_groups_with_signal


def _rewards() -> np.ndarray:
    """4 groups of G=4: two varied, one all-zero, one all-0.1 (not exact in fp32)."""
    rng = np.random.default_rng(0)
    varied = rng.uniform(-1.0, 2.0, size=8)
    return np.concatenate([varied[:4], [0.0] * 4, varied[4:], [0.1] * 4]).astype(np.float32)


def test_hand_checked_group_scaling():
    # mean 0.25; unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5; population std sqrt(3)/4.
    rewards = jnp.array([1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(
        compute_advantages(rewards, 4, "group", eps=0.0), [1.5, -0.5, -0.5, -0.5], rtol=1e-6
    )
    pop = np.sqrt(3.0) / 4.0
    np.testing.assert_allclose(
        compute_advantages(rewards, 4, "group", eps=0.0, std_ddof=0),
        np.array([0.75, -0.25, -0.25, -0.25]) / pop,
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        compute_advantages(rewards, 4, "none"), [0.75, -0.25, -0.25, -0.25], rtol=1e-6
    )


@pytest.mark.parametrize("scaling", ["group", "none", "batch"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_matches_loop_reference(scaling, ddof):
    rewards = _rewards()
    got = compute_advantages(jnp.asarray(rewards), 4, scaling, eps=1e-4, std_ddof=ddof)
    want = ref_advantages(rewards.astype(np.float64), 4, scaling, 1e-4, ddof)
    assert got.dtype == jnp.float32 and got.shape == (16,)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scaling", ["group", "none", "batch"])
def test_zero_variance_groups_are_exactly_zero(scaling):
    adv = np.asarray(compute_advantages(jnp.asarray(_rewards()), 4, scaling))
    assert np.all(np.isfinite(adv))
    assert np.all(adv[4:8] == 0.0) and np.all(adv[12:16] == 0.0)
    assert np.all(adv[:4] != 0.0)
    all_equal = compute_advantages(jnp.full((6,), 0.3), 3, scaling)
    assert np.all(np.asarray(all_equal) == 0.0)


def test_jit_with_static_args():
    fn = jax.jit(compute_advantages, static_argnames=("group_size", "scaling", "std_ddof"))
    rewards = jnp.asarray(_rewards())
    np.testing.assert_allclose(
        fn(rewards, group_size=4, scaling="batch"),
        compute_advantages(rewards, 4, "batch"),
        rtol=1e-6,
    )


def test_group_stats():
    stats = group_stats(jnp.asarray(_rewards()), 4)
    rewards = _rewards().astype(np.float64).reshape(4, 4)
    np.testing.assert_allclose(stats["mean"], rewards.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["std"], rewards.std(axis=1, ddof=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats["zero_std_mask"], [False, True, False, True])
    assert float(stats["frac_zero_std"]) == 0.5


def test_select_groups_with_signal():
    rewards = np.array([1, 0, 1, 1, 1, 1, 0, 0, 0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    # G=3: [1,0,1] [1,1,1] [0,0,.5] [.5,.5,.5]; G=6: [1,0,1,1,1,1] [0,0,.5,.5,.5,.5].
    np.testing.assert_array_equal(select_groups_with_signal(rewards, 3), [True, False, True, False])
    np.testing.assert_array_equal(select_groups_with_signal(rewards, 6), [True, True])
    np.testing.assert_array_equal(select_groups_with_signal(np.zeros(4), 2), [False, False])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="not a multiple of group_size=3"):
        compute_advantages(jnp.zeros(8), 3)
    with pytest.raises(ValueError, match="scaling must be one of"):
        compute_advantages(jnp.zeros(8), 4, scaling="global")
    with pytest.raises(ValueError, match="group_size=1 is too small"):
        compute_advantages(jnp.zeros(8), 1)
    with pytest.raises(ValueError, match="shape \\[N\\]"):
        group_stats(jnp.zeros((2, 4)), 4)
    with pytest.raises(ValueError, match="rewards\\[4\\] = nan is not finite"):
        select_groups_with_signal(np.array([0, 1, 0, 1, np.nan, 0]), 2)
    with pytest.raises(ValueError, match="not a multiple"):
        select_groups_with_signal(np.zeros(5), 2)
