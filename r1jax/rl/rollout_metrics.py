"""Per-step statistics of the rollouts (rewards, groups, lengths), over all processes.

R = prompts * G rows, each prompt's G rows contiguous. With several JAX processes each holds
its own rows; :func:`gather_rollouts` joins the arrays the metrics read, in process order.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from r1jax import distributed as dist
from r1jax.rl.rollout import Rollouts


def gather_rollouts(roll: Rollouts) -> Rollouts:
    """``roll`` with the per-row arrays and counts that metrics use gathered over all
    processes (``roll`` itself with one process). Tokens and texts stay local; the gathered
    ``input_mask`` is ``[1, 1]`` holding the total number of real tokens (only its sum is
    used)."""
    if jax.process_count() == 1:
        return roll
    fails = sorted(roll.reward_failures)
    local = {
        "rewards": roll.rewards,
        "completion_mask": roll.completion_mask,
        "truncated": roll.truncated,
        "per_function": roll.per_function,
        "reward_applied": roll.reward_applied,
        "correct": np.full(len(roll.rewards), np.nan, np.float32)
        if roll.correct is None
        else roll.correct,
        "counts": np.array(
            [
                np.asarray(roll.input_mask).sum(),
                roll.dropped_groups,
                roll.sampled_groups,
                *(roll.reward_failures[k] for k in fails),
            ],
            np.int32,
        )[None],
    }
    g = dist.allgather(local)
    counts = g["counts"].sum(axis=0)
    return dataclasses.replace(
        roll,
        rewards=g["rewards"],
        completion_mask=g["completion_mask"],
        finish_reason=["length" if t else "" for t in g["truncated"]],
        per_function=g["per_function"],
        reward_applied=g["reward_applied"],
        correct=g["correct"],
        input_mask=np.array([[counts[0]]]),
        dropped_groups=int(counts[1]),
        sampled_groups=int(counts[2]),
        reward_failures={k: int(v) for k, v in zip(fails, counts[3:], strict=True)},
    )


def rollout_metrics(
    roll: Rollouts,
    group_size: int,
    dynamic_sampling: bool,
) -> dict[str, float]:
    """``reward/*``, ``groups/*`` and ``completion/*`` metrics of ``roll`` (R rows); a reward
    term's ``reward/fn/<key>/mean|std`` are over the rows it is routed to,
    ``reward/accuracy_mean`` over the rows an accuracy reward judges (``roll.correct``)."""
    out = {
        "reward/mean": float(roll.rewards.mean()),
        "reward/std": float(roll.rewards.std()),
    }
    for name, v in roll.per_function.items():
        v = v[roll.reward_applied[name]] if name in roll.reward_applied else v
        out[f"reward/fn/{name}/mean"] = float(v.mean()) if v.size else 0.0
        out[f"reward/fn/{name}/std"] = float(v.std()) if v.size else 0.0
    out.update({f"reward/{k}": float(v) for k, v in roll.reward_failures.items()})
    judged = None if roll.correct is None else roll.correct[~np.isnan(roll.correct)]
    if judged is not None and judged.size:
        out["reward/accuracy_mean"] = float(judged.mean())
    g = roll.rewards.reshape(-1, group_size)  # [prompts, G]
    out["groups/frac_zero_std"] = float((g.max(1) == g.min(1)).mean())
    if dynamic_sampling:
        out["groups/dropped"] = float(roll.dropped_groups)
        out["groups/sampled"] = float(roll.sampled_groups)
    lengths = roll.lengths
    out.update(
        {
            "completion/length_mean": float(lengths.mean()),
            "completion/length_min": float(lengths.min()),
            "completion/length_max": float(lengths.max()),
            "completion/frac_truncated": float(roll.truncated.mean()),
        }
    )
    return out
