"""Independent NumPy / Python-loop reference for GRPO advantages and losses.

Written from the GRPO formulas of the DeepSeekMath / DeepSeek-R1 papers, deliberately
without vectorised tricks: loops over groups, sequences and tokens, float64 throughout. The
gradient reference is central finite differences of the float64 loss, so it
shares no code path (and no autodiff) with r1jax.
"""

from __future__ import annotations

import math

import numpy as np


def ref_advantages(
    rewards: np.ndarray, group_size: int, scaling: str, eps: float, ddof: int
) -> np.ndarray:
    """Advantages ``[N]`` by explicit loops over groups."""
    rewards = [float(r) for r in rewards]
    n = len(rewards)

    def std(values: list[float]) -> float:
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - ddof))

    batch_std = std(rewards)
    out = np.zeros(n)
    for start in range(0, n, group_size):
        group = rewards[start : start + group_size]
        mean = sum(group) / group_size
        if all(v == group[0] for v in group):
            continue  # zero-variance group: advantages stay 0
        for j, r in enumerate(group):
            if scaling == "group":
                out[start + j] = (r - mean) / (std(group) + eps)
            elif scaling == "batch":
                out[start + j] = (r - mean) / (batch_std + eps)
            else:
                out[start + j] = r - mean
    return out


def _token_objective(ratio: float, adv: float, eps_low: float, eps_high: float, delta) -> float:
    clipped = min(max(ratio, 1.0 - eps_low), 1.0 + eps_high)
    obj = min(ratio * adv, clipped * adv)
    if delta is not None and adv < 0:
        obj = max(obj, delta * adv)
    return obj


def ref_loss(
    logp: np.ndarray,
    old_logp: np.ndarray,
    ref_logp: np.ndarray | None,
    advantages: np.ndarray,
    mask: np.ndarray,
    loss_type: str,
    eps_low: float,
    eps_high: float,
    beta: float,
    max_completion_len: int | None = None,
    delta: float | None = None,
) -> dict[str, float]:
    """Loss and metrics by loops; returns ``loss``, ``pg_loss`` and the metrics.

    GSPO is implemented at the *sequence* level, as in the paper's main
    objective: ``s_i = exp(mean_t log-ratio)``, ``min(s_i A, clip(s_i) A)`` per
    sequence, minus ``beta`` times the sequence's token-mean KL.
    """
    batch, length = logp.shape
    seq_pg, seq_kl = [], []  # per-sequence sums over tokens
    counts = []
    ratios, lows, highs, duals, kls = [], [], [], [], []
    for i in range(batch):
        toks = [t for t in range(length) if mask[i, t] > 0]
        counts.append(len(toks))
        adv = float(advantages[i])
        pg_sum, kl_sum = 0.0, 0.0
        if loss_type == "gspo" and toks:
            seq_log_ratio = sum(float(logp[i, t] - old_logp[i, t]) for t in toks) / len(toks)
            seq_ratio = math.exp(seq_log_ratio)
            pg_sum = -_token_objective(seq_ratio, adv, eps_low, eps_high, delta) * len(toks)
        for t in toks:
            if loss_type == "gspo":
                ratio = seq_ratio
            else:
                ratio = math.exp(float(logp[i, t]) - float(old_logp[i, t]))
                pg_sum += -_token_objective(ratio, adv, eps_low, eps_high, delta)
            ratios.append(ratio)
            lows.append(adv < 0 and ratio < 1.0 - eps_low)
            highs.append(adv > 0 and ratio > 1.0 + eps_high)
            duals.append(delta is not None and adv < 0 and ratio > delta)
            if ref_logp is not None:
                d = float(ref_logp[i, t]) - float(logp[i, t])
                kl = math.exp(d) - d - 1.0
                kl_sum += kl
                kls.append(kl)
        seq_pg.append(pg_sum)
        seq_kl.append(kl_sum)

    def aggregate(per_seq_sums: list[float]) -> float:
        if loss_type in ("grpo", "gspo"):
            return sum(s / max(c, 1) for s, c in zip(per_seq_sums, counts, strict=True)) / batch
        if loss_type == "token":
            return sum(per_seq_sums) / max(sum(counts), 1)
        return sum(per_seq_sums) / (batch * max_completion_len)

    pg_loss = aggregate(seq_pg)
    loss = (
        aggregate([p + beta * k for p, k in zip(seq_pg, seq_kl, strict=True)])
        if beta > 0
        else pg_loss
    )
    num = len(ratios)

    def frac(flags: list[bool]) -> float:
        return sum(flags) / max(num, 1)

    out = {
        "loss": loss,
        "pg_loss": pg_loss,
        "clip_frac_low": frac(lows),
        "clip_frac_high": frac(highs),
        "clip_frac": frac([a or b for a, b in zip(lows, highs, strict=True)]),
        "dual_clip_frac": frac(duals),
        "ratio_mean": sum(ratios) / max(num, 1),
        "ratio_max": max(ratios) if ratios else 0.0,
        "num_tokens": float(num),
    }
    if ref_logp is not None:
        out["kl"] = sum(kls) / max(num, 1)
    return out


def ref_grad_logp(
    logp: np.ndarray,
    old_logp: np.ndarray,
    ref_logp: np.ndarray | None,
    advantages: np.ndarray,
    mask: np.ndarray,
    h: float = 1e-6,
    **cfg,
) -> np.ndarray:
    """``d loss / d logp`` ``[B, T]`` by float64 central finite differences.

    ``old_logp`` and ``ref_logp`` stay fixed (for the on-policy case pass a
    copy of ``logp``: it is the stop-gradient base point).
    """
    logp = np.asarray(logp, dtype=np.float64)
    grad = np.zeros_like(logp)
    for i in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            plus, minus = logp.copy(), logp.copy()
            plus[i, t] += h
            minus[i, t] -= h
            f_plus = ref_loss(plus, old_logp, ref_logp, advantages, mask, **cfg)["loss"]
            f_minus = ref_loss(minus, old_logp, ref_logp, advantages, mask, **cfg)["loss"]
            grad[i, t] = (f_plus - f_minus) / (2 * h)
    return grad


def ref_token_logprobs(
    hidden: np.ndarray, lm_head: np.ndarray, targets: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Naive float64 ``(logp [B, T], entropy [B, T])`` by loops over positions."""
    batch, length, _ = hidden.shape
    logp = np.zeros((batch, length))
    entropy = np.zeros((batch, length))
    for b in range(batch):
        for t in range(length):
            logits = hidden[b, t].astype(np.float64) @ lm_head.astype(np.float64) / temperature
            m = logits.max()
            lse = m + math.log(sum(math.exp(z - m) for z in logits))
            logp[b, t] = logits[targets[b, t]] - lse
            entropy[b, t] = -sum(math.exp(z - lse) * (z - lse) for z in logits)
    return logp, entropy
