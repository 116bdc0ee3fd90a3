"""Group-relative advantages for GRPO and its variants.

Rollouts are laid out as ``N = num_prompts * G`` rows, grouped contiguously:
prompt ``i`` owns rows ``i*G .. i*G + G - 1``. Every function here keeps that
layout.

Scalings (``compute_advantages(..., scaling=...)``):

- ``"group"`` (GRPO / DeepSeekMath): ``A = (r - mean_g) / (std_g + eps)``.
- ``"none"`` (Dr. GRPO): ``A = r - mean_g``.
- ``"batch"``: ``A = (r - mean_g) / (std_batch + eps)``, the std taken over
  all ``N`` rewards.

Standard deviations use ``std_ddof=1`` (the unbiased estimator) by default, as
TRL does with ``torch.std``; pass ``std_ddof=0`` for the population std.
Groups whose rewards are all equal carry no learning signal: their
advantages are exactly 0 whatever the scaling (never NaN).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SCALINGS = ("group", "none", "batch")


def _check_layout(num_rows: int, group_size: int, std_ddof: int = 0) -> int:
    """Validates the ``[N]`` grouped layout and returns ``num_prompts``."""
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if num_rows % group_size != 0:
        raise ValueError(f"rewards has {num_rows} rows, not a multiple of group_size={group_size}")
    if std_ddof not in (0, 1):
        raise ValueError(f"std_ddof must be 0 or 1, got {std_ddof!r}")
    if group_size - std_ddof < 1:
        raise ValueError(f"group_size={group_size} is too small for std_ddof={std_ddof}")
    return num_rows // group_size


def _grouped(rewards: jax.Array, group_size: int, std_ddof: int) -> jax.Array:
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape [N], got {rewards.shape}")
    num_prompts = _check_layout(rewards.shape[0], group_size, std_ddof)
    return rewards.astype(jnp.float32).reshape(num_prompts, group_size)


def group_stats(rewards: jax.Array, group_size: int, std_ddof: int = 1) -> dict[str, jax.Array]:
    """Per-group reward statistics.

    Args:
      rewards: ``[N]`` rewards, ``N = num_prompts * group_size``, grouped
        contiguously.
      group_size: ``G``, the number of completions per prompt.
      std_ddof: delta degrees of freedom of the std (1 = unbiased, default).

    Returns:
      ``mean [P]`` and ``std [P]`` per group (float32), ``zero_std_mask [P]``
      (bool, True where all G rewards are exactly equal) and
      ``frac_zero_std`` (scalar float32, the fraction of such groups).
    """
    grouped = _grouped(rewards, group_size, std_ddof)
    zero_std = jnp.max(grouped, axis=1) == jnp.min(grouped, axis=1)
    return {
        "mean": jnp.mean(grouped, axis=1),
        "std": jnp.std(grouped, axis=1, ddof=std_ddof),
        "zero_std_mask": zero_std,
        "frac_zero_std": jnp.mean(zero_std.astype(jnp.float32)),
    }


def compute_advantages(
    rewards: jax.Array,
    group_size: int,
    scaling: str = "group",
    eps: float = 1e-4,
    std_ddof: int = 1,
) -> jax.Array:
    """Group-relative advantages, one per completion.

    Args:
      rewards: ``[N]`` rewards, ``N = num_prompts * group_size``, prompt ``i``
        owning rows ``i*G .. i*G+G-1``.
      group_size: ``G`` (static Python int).
      scaling: ``"group"``, ``"none"`` (Dr. GRPO) or ``"batch"``; see the
        module docstring.
      eps: added to the std before dividing.
      std_ddof: 1 (unbiased, TRL's ``torch.std``, default) or 0 (population).

    Returns:
      ``[N]`` float32 advantages; exactly 0 for groups with all-equal rewards.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    grouped = _grouped(rewards, group_size, std_ddof)
    centred = grouped - jnp.mean(grouped, axis=1, keepdims=True)
    if scaling == "group":
        adv = centred / (jnp.std(grouped, axis=1, ddof=std_ddof, keepdims=True) + eps)
    elif scaling == "batch":
        adv = centred / (jnp.std(grouped, ddof=std_ddof) + eps)
    else:
        adv = centred
    # Exact zeros for zero-variance groups: the fp32 mean of equal values can
    # differ from them by an ulp, which ``/ eps`` would blow up.
    zero_std = jnp.max(grouped, axis=1, keepdims=True) == jnp.min(grouped, axis=1, keepdims=True)
    return jnp.where(zero_std, 0.0, adv).reshape(-1)


def select_groups_with_signal(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """DAPO dynamic sampling: which groups to keep (host side, NumPy).

    A group whose G rewards are all equal has zero advantages and contributes
    no policy gradient; the trainer drops it and samples more prompts to
    refill the batch.

    Args:
      rewards: ``[N]`` rewards on the host, grouped contiguously.
      group_size: ``G``.

    Returns:
      ``[num_prompts]`` bool, True for groups with at least two distinct
      rewards (keep), False for zero-variance groups (drop).

    Raises:
      ValueError: on a bad layout or a non-finite reward (naming the row).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape [N], got {rewards.shape}")
    num_prompts = _check_layout(rewards.shape[0], group_size)
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"rewards[{row}] = {rewards[row]} is not finite")
    grouped = rewards.reshape(num_prompts, group_size)
    return grouped.max(axis=1) > grouped.min(axis=1)
