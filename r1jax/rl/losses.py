"""GRPO-family clipped policy losses (pure, jit-friendly JAX).

One entry point, :func:`policy_loss`, covers the variants users switch
between; the variant is static configuration (:class:`LossConfig`).

Per token ``t`` of completion ``i`` (only where ``mask`` is 1)::

    rho  = exp(logp - old_logp)                         # importance ratio
    obj  = min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i)
    obj  = max(obj, delta * A_i)    if delta is set and A_i < 0   (dual clip)
    kl   = exp(ref_logp - logp) - (ref_logp - logp) - 1             ("k3")
    loss_t = -(obj - beta * kl)

Aggregation (``loss_type``):

- ``"grpo"``: mean over each sequence's tokens, then mean over the ``B``
  sequences (a sequence with no tokens contributes 0 and still counts in B).
- ``"token"`` (DAPO): sum over all tokens / number of tokens.
- ``"dr_grpo"``: sum over all tokens / (B * max_completion_len), a constant.
- ``"gspo"``: GSPO-token (Zheng et al. 2025): every token carries the
  sequence ratio ``s_i = exp(mean_t(logp - old_logp))`` as its value and the
  gradient of its own log-prob, ``s_it = sg(s_i) * exp(logp_t - sg(logp_t))``;
  then aggregated like ``"grpo"``. With per-sequence advantages its gradient
  equals that of sequence-level GSPO. The GSPO paper clips at
  ``eps_low=3e-4, eps_high=4e-4`` (see ``GSPO_EPS_LOW/HIGH``), far smaller
  than GRPO's 0.2; this module uses whatever the config says.

On-policy updates (``num_iterations=1``): pass ``old_logp=None`` (or
``jax.lax.stop_gradient(logp)``). The ratio is then 1, so the loss *value* is
``-mean(A) + beta * KL`` -- about ``beta * KL`` because group advantages are
zero-mean -- but its gradient is the policy gradient ``-A * grad(logp)``.
A "loss of 0" is expected there; read ``pg_loss``, ``kl`` and the reward.

Masked-out positions may hold any value (even inf/NaN): they never enter the
loss, the metrics or the gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

LOSS_TYPES = ("grpo", "token", "dr_grpo", "gspo")
GSPO_EPS_LOW = 3e-4
GSPO_EPS_HIGH = 4e-4


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Static configuration of :func:`policy_loss`.

    Attributes:
      loss_type: ``"grpo"``, ``"token"``, ``"dr_grpo"`` or ``"gspo"``.
      eps_low: lower clip, ratio floor ``1 - eps_low`` (DAPO: 0.2).
      eps_high: upper clip, ratio ceiling ``1 + eps_high`` (DAPO: 0.28).
      beta: weight of the k3 KL penalty against the reference policy.
      max_completion_len: the ``dr_grpo`` normaliser (required for it).
      delta: optional dual-clip bound (> 1): for negative advantages the
        objective is at least ``delta * A``. None (default) turns it off.
    """

    loss_type: str = "grpo"
    eps_low: float = 0.2
    eps_high: float = 0.2
    beta: float = 0.0
    max_completion_len: int | None = None
    delta: float | None = None

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(
                f"LossConfig.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}"
            )
        if not 0.0 <= self.eps_low < 1.0:
            raise ValueError(f"LossConfig.eps_low must be in [0, 1), got {self.eps_low!r}")
        if self.eps_high < 0.0:
            raise ValueError(f"LossConfig.eps_high must be >= 0, got {self.eps_high!r}")
        if self.beta < 0.0:
            raise ValueError(f"LossConfig.beta must be >= 0, got {self.beta!r}")
        if self.loss_type == "dr_grpo" and (
            self.max_completion_len is None or self.max_completion_len < 1
        ):
            raise ValueError(
                "LossConfig.max_completion_len must be a positive int for loss_type='dr_grpo', "
                f"got {self.max_completion_len!r}"
            )
        if self.delta is not None and self.delta <= 1.0:
            raise ValueError(f"LossConfig.delta (dual clip) must be > 1, got {self.delta!r}")


def _check_shapes(logp, old_logp, ref_logp, advantages, mask) -> None:
    if logp.ndim != 2:
        raise ValueError(f"logp must have shape [B, T], got {logp.shape}")
    for name, x in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if x is not None and x.shape != logp.shape:
            raise ValueError(f"{name} has shape {x.shape}, expected logp's {logp.shape}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages has shape {advantages.shape}, expected [{logp.shape[0]}]")


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x`` over positions where ``mask`` is 1 (0 when none)."""
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _aggregate(per_token: jax.Array, mask: jax.Array, cfg: LossConfig) -> jax.Array:
    """Reduces a ``[B, T]`` per-token loss (already zero off-mask) to a scalar."""
    if cfg.loss_type in ("grpo", "gspo"):
        per_seq = jnp.sum(per_token, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        return jnp.mean(per_seq)
    if cfg.loss_type == "token":
        return jnp.sum(per_token) / jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.sum(per_token) / (per_token.shape[0] * cfg.max_completion_len)


def _log_ratio(logp: jax.Array, old_logp: jax.Array, mask: jax.Array, cfg: LossConfig):
    """``[B, T]`` log importance ratio (0 off-mask), token- or GSPO-token-level."""
    valid = mask > 0
    log_ratio = jnp.where(valid, logp - old_logp, 0.0)
    if cfg.loss_type != "gspo":
        return log_ratio
    seq = jnp.sum(log_ratio, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    # Value: the sequence log-ratio; gradient: that of the token's own logp.
    own = jnp.where(valid, logp - jax.lax.stop_gradient(logp), 0.0)
    return jax.lax.stop_gradient(seq)[:, None] + own


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array | None,
    ref_logp: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    cfg: LossConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped GRPO-family policy loss and its metrics.

    Args:
      logp: ``[B, T]`` log-probs of the taken tokens under the current policy
        (differentiate w.r.t. this).
      old_logp: ``[B, T]`` log-probs under the sampling (old) policy, or None
        for on-policy updates (``stop_gradient(logp)``).
      ref_logp: ``[B, T]`` reference-policy log-probs, or None (needs
        ``cfg.beta == 0``).
      advantages: ``[B]`` one advantage per completion.
      mask: ``[B, T]`` 1 for completion tokens that count, 0 for prompt,
        padding and masked (e.g. truncated) completions.
      cfg: static :class:`LossConfig`.

    Returns:
      ``(loss, metrics)``: the scalar float32 loss, and float32 scalars
      ``pg_loss`` (loss without the KL term), ``kl`` (token-mean k3, only when
      ``ref_logp`` is given), ``clip_frac_low`` (A<0 and ratio<1-eps_low),
      ``clip_frac_high`` (A>0 and ratio>1+eps_high), ``clip_frac`` (their sum),
      ``dual_clip_frac`` (A<0 and ratio>delta; 0 without ``delta``),
      ``ratio_mean``, ``ratio_max`` and ``num_tokens``, all over masked tokens.
    """
    logp, advantages, mask = jnp.asarray(logp), jnp.asarray(advantages), jnp.asarray(mask)
    old_logp = jax.lax.stop_gradient(logp) if old_logp is None else jnp.asarray(old_logp)
    ref_logp = None if ref_logp is None else jnp.asarray(ref_logp)
    _check_shapes(logp, old_logp, ref_logp, advantages, mask)
    if cfg.beta > 0 and ref_logp is None:
        raise ValueError(f"ref_logp is required when LossConfig.beta > 0 (beta={cfg.beta})")
    f32 = jnp.float32
    logp, old_logp = logp.astype(f32), old_logp.astype(f32)
    mask = mask.astype(f32)
    valid = mask > 0
    adv = advantages.astype(f32)[:, None]

    ratio = jnp.exp(_log_ratio(logp, old_logp, mask, cfg))
    clipped = jnp.clip(ratio, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
    objective = jnp.minimum(ratio * adv, clipped * adv)
    if cfg.delta is not None:
        objective = jnp.where(adv < 0, jnp.maximum(objective, cfg.delta * adv), objective)
    pg_per_token = jnp.where(valid, -objective, 0.0)
    pg_loss = _aggregate(pg_per_token, mask, cfg)

    metrics: dict[str, jax.Array] = {"pg_loss": pg_loss}
    loss = pg_loss
    if ref_logp is not None:
        diff = jnp.where(valid, ref_logp.astype(f32) - logp, 0.0)
        kl = jnp.where(valid, jnp.exp(diff) - diff - 1.0, 0.0)
        metrics["kl"] = _masked_mean(kl, mask)
        if cfg.beta > 0:
            loss = _aggregate(pg_per_token + cfg.beta * kl, mask, cfg)

    ratio_sg = jax.lax.stop_gradient(ratio)
    low = (adv < 0) & (ratio_sg < 1.0 - cfg.eps_low)
    high = (adv > 0) & (ratio_sg > 1.0 + cfg.eps_high)
    dual = (adv < 0) & (ratio_sg > cfg.delta) if cfg.delta is not None else jnp.zeros_like(low)
    metrics.update(
        clip_frac_low=_masked_mean(low.astype(f32), mask),
        clip_frac_high=_masked_mean(high.astype(f32), mask),
        clip_frac=_masked_mean((low | high).astype(f32), mask),
        dual_clip_frac=_masked_mean(dual.astype(f32), mask),
        ratio_mean=_masked_mean(ratio_sg, mask),
        ratio_max=jnp.max(jnp.where(valid, ratio_sg, 0.0)),
        num_tokens=jnp.sum(mask),
    )
    return loss, metrics
