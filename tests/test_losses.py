"""Tests for r1jax.rl.losses against the loop / finite-difference reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from grpo_reference import ref_grad_logp, ref_loss

from r1jax.rl.losses import GSPO_EPS_HIGH, GSPO_EPS_LOW, LossConfig, policy_loss

B, T = 6, 7
# Token log-ratios: 0.607 (< 0.8), 0.905, 1.051, 1.105 (inside [0.8, 1.2]), 1.49 (> 1.2; > delta).
TOKEN_LOG_RATIOS = np.array([-0.5, -0.1, 0.05, 0.1, 0.4])
METRIC_KEYS = (
    "pg_loss",
    "clip_frac_low",
    "clip_frac_high",
    "clip_frac",
    "dual_clip_frac",
    "ratio_mean",
    "ratio_max",
    "num_tokens",
)


def _mask() -> np.ndarray:
    mask = np.ones((B, T), np.float32)
    mask[1, 5:] = 0  # right padding
    mask[2, [1, 4]] = 0  # holes inside the sequence
    mask[3, :] = 0  # fully masked row (e.g. truncated completion)
    mask[5, :2] = 0  # prompt positions on the left
    return mask


def _batch(gspo: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 inputs; token-level or sequence-level log-ratios away from every clip kink."""
    rng = np.random.default_rng(seed)
    logp = rng.uniform(-3.0, -0.1, size=(B, T)).astype(np.float32)
    if gspo:
        # Sequence log-ratio ~ row shift (noise is zero-mean over each row's tokens).
        shifts = np.array([0.3, -0.3, 0.02, 0.5, 1e-4, -0.4])
        noise = rng.uniform(-0.2, 0.2, size=(B, T))
        noise -= (noise * _mask()).sum(1, keepdims=True) / np.maximum(
            _mask().sum(1, keepdims=True), 1
        )
        log_ratio = shifts[:, None] + noise
    else:
        # Cycle through the table so every row sees every ratio.
        log_ratio = TOKEN_LOG_RATIOS[(3 * np.arange(B)[:, None] + np.arange(T)) % 5]
    old = (logp - log_ratio).astype(np.float32)
    ref = (logp + rng.uniform(-0.3, 0.3, size=(B, T))).astype(np.float32)
    adv = np.array([1.2, -0.8, 0.5, 0.9, -1.5, -0.4], np.float32)
    return {"logp": logp, "old_logp": old, "ref_logp": ref, "advantages": adv, "mask": _mask()}


def _ref_kwargs(cfg: LossConfig) -> dict:
    return dataclasses.asdict(cfg)


def _check_against_reference(cfg: LossConfig, data: dict, on_policy: bool = False):
    ref_logp = data["ref_logp"] if cfg.beta > 0 else None
    old = None if on_policy else data["old_logp"]

    def loss_fn(logp):
        return policy_loss(logp, old, ref_logp, data["advantages"], data["mask"], cfg)

    (loss, metrics), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(data["logp"])
    np64 = {k: (None if v is None else np.asarray(v, np.float64)) for k, v in data.items()}
    old64 = np64["logp"].copy() if on_policy else np64["old_logp"]
    ref64 = np64["ref_logp"] if cfg.beta > 0 else None
    args = (old64, ref64, np64["advantages"], np64["mask"])
    want = ref_loss(np64["logp"], *args, **_ref_kwargs(cfg))
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), want["loss"], rtol=1e-5, atol=1e-6)
    for key in METRIC_KEYS + (("kl",) if ref_logp is not None else ()):
        np.testing.assert_allclose(
            float(metrics[key]), want[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    want_grad = ref_grad_logp(np64["logp"], *args, **_ref_kwargs(cfg))
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(grad)[data["mask"] == 0] == 0.0)
    return metrics, want_grad


@pytest.mark.parametrize("loss_type", ["grpo", "token", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_token_level_losses_match_reference(loss_type, beta):
    cfg = LossConfig(loss_type, eps_low=0.2, eps_high=0.28, beta=beta, max_completion_len=9)
    metrics, _ = _check_against_reference(cfg, _batch())
    # The fixture really exercises both clip sides and the unclipped region.
    assert float(metrics["clip_frac_low"]) > 0 and float(metrics["clip_frac_high"]) > 0
    assert float(metrics["clip_frac"]) < 0.6
    assert float(metrics["num_tokens"]) == _mask().sum()


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("eps", [(0.2, 0.28), (GSPO_EPS_LOW, GSPO_EPS_HIGH)])
def test_gspo_matches_sequence_level_reference(beta, eps):
    cfg = LossConfig("gspo", eps_low=eps[0], eps_high=eps[1], beta=beta)
    metrics, want_grad = _check_against_reference(cfg, _batch(gspo=True))
    assert float(metrics["clip_frac_low"]) > 0 and float(metrics["clip_frac_high"]) > 0
    assert float(metrics["clip_frac"]) < 1
    # Row 4 (sequence ratio 1.0001) is inside both clip ranges: every token gets a gradient.
    assert np.all(np.abs(want_grad[4][_mask()[4] > 0]) > 1e-3)


def test_dual_clip_matches_reference():
    cfg = LossConfig("token", eps_low=0.2, eps_high=0.2, delta=1.3)
    metrics, _ = _check_against_reference(cfg, _batch())
    assert float(metrics["dual_clip_frac"]) > 0
    no_dual, _ = policy_loss(**_batch(), cfg=dataclasses.replace(cfg, delta=None))
    assert float(metrics["pg_loss"]) < float(no_dual)  # dual clip caps the negative-A loss


@pytest.mark.parametrize("loss_type", ["grpo", "token", "dr_grpo", "gspo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_on_policy_num_iterations_1(loss_type, beta):
    """old_logp = stop_gradient(logp): ratio 1, loss = -agg(A) + beta*KL, gradient non-zero."""
    cfg = LossConfig(loss_type, beta=beta, max_completion_len=T)
    data = _batch()
    metrics, want_grad = _check_against_reference(cfg, data, on_policy=True)
    assert float(metrics["ratio_mean"]) == 1.0 and float(metrics["clip_frac"]) == 0.0
    assert np.abs(want_grad).max() > 0.01
    # old_logp=None is the same as an explicit stop_gradient.
    explicit = jax.grad(
        lambda lp: policy_loss(
            lp, jax.lax.stop_gradient(lp), data["ref_logp"], data["advantages"], data["mask"], cfg
        )[0]
    )(data["logp"])
    np.testing.assert_allclose(explicit, want_grad, rtol=1e-4, atol=1e-5)


def test_on_policy_grpo_hand_checked():
    """Full masks, beta 0: loss = -mean(A) = 0 for zero-mean A; dL/dlogp_t = -A_i / (B * T)."""
    adv = jnp.array([1.0, -1.0, 0.5, -0.5])
    logp = jnp.full((4, 3), -1.0)
    loss_fn = lambda lp: policy_loss(lp, None, None, adv, jnp.ones((4, 3)), LossConfig())[0]
    loss, grad = jax.value_and_grad(loss_fn)(logp)
    assert float(loss) == 0.0
    np.testing.assert_allclose(grad, -np.repeat(np.asarray(adv)[:, None], 3, 1) / 12, rtol=1e-6)


def test_hand_checked_clipping():
    # One sequence, A = 1, ratios 1.5 and 0.5: min(1.5, 1.2) = 1.2 and min(0.5, 0.8) = 0.5.
    logp = jnp.log(jnp.array([[1.5, 0.5]]))
    loss, m = policy_loss(
        logp, jnp.zeros((1, 2)), None, jnp.ones(1), jnp.ones((1, 2)), LossConfig()
    )
    np.testing.assert_allclose(float(loss), -0.85, rtol=1e-6)
    assert float(m["clip_frac_high"]) == 0.5 and float(m["clip_frac_low"]) == 0.0
    np.testing.assert_allclose([m["ratio_mean"], m["ratio_max"]], [1.0, 1.5], rtol=1e-6)
    # Same tokens, A = -1: -min(-1.5, -1.2) = 1.5 and -min(-0.5, -0.8) = 0.8, with delta 1.3 -> 1.3.
    loss, m = policy_loss(
        logp, jnp.zeros((1, 2)), None, -jnp.ones(1), jnp.ones((1, 2)), LossConfig(delta=1.3)
    )
    np.testing.assert_allclose(float(loss), (1.3 + 0.8) / 2, rtol=1e-6)
    assert float(m["clip_frac_low"]) == 0.5 and float(m["dual_clip_frac"]) == 0.5


@pytest.mark.parametrize("loss_type", ["grpo", "token", "dr_grpo", "gspo"])
def test_garbage_in_masked_positions_and_empty_batch(loss_type):
    cfg = LossConfig(loss_type, beta=0.1, max_completion_len=T)
    data = _batch()
    off = data["mask"] == 0
    garbage = {
        k: np.where(off, np.inf if k == "old_logp" else -np.inf, v).astype(np.float32)
        for k, v in data.items()
        if k in ("logp", "old_logp", "ref_logp")
    }
    fn = lambda lp, mask: policy_loss(
        lp, garbage["old_logp"], garbage["ref_logp"], data["advantages"], mask, cfg
    )
    (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(garbage["logp"], data["mask"])
    (clean, _) = policy_loss(**{**data, "cfg": cfg})
    np.testing.assert_allclose(float(loss), float(clean), rtol=1e-6)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[off] == 0.0)
    # A batch with no tokens at all: loss and metrics 0, gradient 0, nothing NaN.
    empty = jnp.zeros((B, T))
    (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(garbage["logp"], empty)
    assert float(loss) == 0.0 and float(metrics["num_tokens"]) == 0.0
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert np.all(np.asarray(grad) == 0.0)


def test_config_and_shape_errors():
    with pytest.raises(ValueError, match="loss_type must be one of"):
        LossConfig("ppo")
    with pytest.raises(ValueError, match="max_completion_len"):
        LossConfig("dr_grpo")
    with pytest.raises(ValueError, match="delta"):
        LossConfig(delta=0.9)
    with pytest.raises(ValueError, match="eps_low"):
        LossConfig(eps_low=1.0)
    data = _batch()
    with pytest.raises(ValueError, match="ref_logp is required"):
        policy_loss(
            data["logp"], None, None, data["advantages"], data["mask"], LossConfig(beta=0.1)
        )
    with pytest.raises(ValueError, match="advantages has shape"):
        policy_loss(data["logp"], None, None, data["advantages"][:3], data["mask"], LossConfig())
    with pytest.raises(ValueError, match="mask has shape"):
        policy_loss(data["logp"], None, None, data["advantages"], data["mask"][:, :3], LossConfig())
