"""Rollouts: sample G completions per prompt, score them on the host, build the update batch.

Reward scoring runs in the scorer's process pool while the device computes the reference /
old log-probs of the same batch (async dispatch), so host and accelerator overlap.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from r1jax.rl.advantages import select_groups_with_signal

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Rollouts:
    """One step's rollouts on the host (R = prompts * G rows, grouped contiguously).

    With several processes, each holds the rollouts of its own prompts only.
    """

    records: list[dict[str, Any]]  # [prompts] dataset records
    tokens: np.ndarray  # [R, P + N] prompt (left padded to P) + completion
    input_mask: np.ndarray  # [R, P + N] bool
    completion_mask: np.ndarray  # [R, N] bool
    texts: list[str]  # [R] decoded completions
    finish_reason: list[str]  # [R]
    logp_sampler: np.ndarray  # [R, N] policy log-probs seen by the sampler
    rewards: np.ndarray  # [R] weighted total
    per_function: dict[str, np.ndarray]  # key -> [R] raw value (0 where not applied)
    reward_failures: dict[str, int]
    sample_time: float = 0.0
    score_time: float = 0.0
    dropped_groups: int = 0
    sampled_groups: int = 0
    # key -> [R] bool: the term is routed to the row (a missing key: every row)
    reward_applied: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # [R] float32 1/0: the row's accuracy reward reaches the threshold; NaN: its source has
    # none (set for the metrics: :meth:`r1jax.eval_run.EvalTask.correct_rows`)
    correct: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return self.completion_mask.sum(axis=1)

    @property
    def truncated(self) -> np.ndarray:
        return np.array([r == "length" for r in self.finish_reason])


def _pad_left(ids: np.ndarray, mask: np.ndarray, width: int, pad_id: int):
    extra = width - ids.shape[1]
    if extra < 0:
        raise ValueError(f"prompt of {ids.shape[1]} tokens exceeds sampling.max_prompt_len={width}")
    return (
        np.pad(ids, ((0, 0), (extra, 0)), constant_values=pad_id),
        np.pad(mask, ((0, 0), (extra, 0)), constant_values=False),
    )


def _concat(parts: Sequence[Rollouts], pad_id: int) -> Rollouts:
    """Rollouts of several sampling rounds in one; rows are left padded to the widest round's
    prompt bucket."""
    first = parts[0]
    width = max(p.tokens.shape[1] for p in parts)
    rows = [_pad_left(p.tokens, p.input_mask, width, pad_id) for p in parts]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])
    per_fn = {k: np.concatenate([p.per_function[k] for p in parts]) for k in first.per_function}
    applied = {
        k: np.concatenate([p.reward_applied[k] for p in parts]) for k in first.reward_applied
    }
    fails: dict[str, int] = {}
    for p in parts:
        for k, v in p.reward_failures.items():
            fails[k] = fails.get(k, 0) + v
    return Rollouts(
        records=[r for p in parts for r in p.records],
        tokens=np.concatenate([t for t, _ in rows]),
        input_mask=np.concatenate([m for _, m in rows]),
        completion_mask=cat("completion_mask"),
        texts=[t for p in parts for t in p.texts],
        finish_reason=[f for p in parts for f in p.finish_reason],
        logp_sampler=cat("logp_sampler"),
        rewards=cat("rewards"),
        per_function=per_fn,
        reward_failures=fails,
        reward_applied=applied,
        sample_time=sum(p.sample_time for p in parts),
        score_time=sum(p.score_time for p in parts),
    )


def _select_groups(r: Rollouts, groups: np.ndarray, group_size: int) -> Rollouts:
    rows = (groups[:, None] * group_size + np.arange(group_size)).reshape(-1)
    take = lambda a: a[rows]
    return dataclasses.replace(
        r,
        records=[r.records[g] for g in groups],
        tokens=take(r.tokens),
        input_mask=take(r.input_mask),
        completion_mask=take(r.completion_mask),
        texts=[r.texts[i] for i in rows],
        finish_reason=[r.finish_reason[i] for i in rows],
        logp_sampler=take(r.logp_sampler),
        rewards=take(r.rewards),
        per_function={k: take(v) for k, v in r.per_function.items()},
        reward_applied={k: take(v) for k, v in r.reward_applied.items()},
    )


class RolloutCollector:
    """Samples and scores rollouts for one step; optional DAPO dynamic sampling."""

    def __init__(
        self,
        sampler: Any,
        scorer: Any,
        next_records: Callable[[], list[dict]],
        group_size: int,
        prompt_len: int | None,
        pad_id: int,
        sampling_params_fn: Callable,
        dynamic_sampling: bool = False,
        max_refill_rounds: int = 3,
        all_processes: Callable[[bool], bool] = bool,
    ):
        """``next_records() -> [B]`` records of this process; ``all_processes(flag)`` is True
        when ``flag`` holds on every process (the identity with one process): with several
        processes sampling is collective, so refill rounds continue until every process has
        its groups."""
        self.sampler = sampler
        self.scorer = scorer
        self.next_records = next_records
        self.group_size = group_size
        self.prompt_len = prompt_len
        self.pad_id = pad_id
        self.sampling_params_fn = sampling_params_fn
        self.dynamic_sampling = dynamic_sampling
        self.max_refill_rounds = max_refill_rounds
        self.all_processes = all_processes
        self.warned: set[str] = set()  # reward terms whose failures were reported

    def sample(self, params: Any, records: list[dict], seed: int) -> tuple[Any, Any, float]:
        """Samples completions and submits them for scoring (non-blocking)."""
        t0 = time.perf_counter()
        out = self.sampler.generate(
            params,
            [r["text"] for r in records],
            num_samples=self.group_size,
            params=self.sampling_params_fn(seed),
        )
        sample_time = time.perf_counter() - t0
        rows = []
        for i in range(len(out.texts)):
            row = dict(records[i // self.group_size])
            row["completion_tokens"] = int(out.lengths[i])
            row["truncated"] = out.finish_reason[i] == "length"
            rows.append(row)
        return out, self.scorer.submit(out.texts, rows), sample_time

    def assemble(self, out: Any) -> tuple[np.ndarray, np.ndarray]:
        """``tokens [R, P + N]`` and ``input_mask [R, P + N]`` of sampled rows (no rewards).

        P is the sampler's prompt bucket for this batch (``prompt_len=None``) or the fixed
        ``prompt_len``."""
        p_ids, p_mask = np.asarray(out.prompt_ids), np.asarray(out.prompt_mask)
        if self.prompt_len is not None:
            p_ids, p_mask = _pad_left(p_ids, p_mask, self.prompt_len, self.pad_id)
        g = self.group_size
        p_ids, p_mask = np.repeat(p_ids, g, axis=0), np.repeat(p_mask, g, axis=0)
        comp_mask = np.asarray(out.completion_mask, bool)
        return (
            np.concatenate([p_ids, np.asarray(out.tokens)], 1).astype(np.int32),
            np.concatenate([p_mask, comp_mask], 1),
        )

    def finish(self, records: list[dict], out: Any, handle: Any, sample_time: float) -> Rollouts:
        """Waits for the rewards of ``out`` and assembles host arrays."""
        t0 = time.perf_counter()
        scores = handle.result()
        score_wait = time.perf_counter() - t0
        warn_reward_failures(scores, len(records) * self.group_size, self.warned)
        tokens, input_mask = self.assemble(out)
        fails = {f"timeouts/{k}": v for k, v in scores.timeouts.items()}
        fails.update({f"errors/{k}": v for k, v in scores.errors.items()})
        return Rollouts(
            records=records,
            tokens=tokens,
            input_mask=input_mask,
            completion_mask=np.asarray(out.completion_mask, bool),
            texts=list(out.texts),
            finish_reason=list(out.finish_reason),
            logp_sampler=np.asarray(out.logp_policy, np.float32),
            rewards=np.asarray(scores.total, np.float32),
            per_function={k: np.asarray(v, np.float32) for k, v in scores.per_function.items()},
            reward_applied={k: np.asarray(v, bool) for k, v in scores.applied.items()},
            reward_failures=fails,
            sample_time=sample_time,
            score_time=score_wait,
        )

    def collect(self, params: Any, seed: int) -> Rollouts:
        """One step's rollouts. With dynamic sampling, zero-variance groups are dropped and
        refilled from further prompts (up to ``max_refill_rounds`` extra rounds); if still
        short, zero-variance groups fill the rest (they carry zero advantage)."""
        records = self.next_records()
        want = len(records)
        out, handle, t = self.sample(params, records, seed)
        first = self.finish(records, out, handle, t)
        if not self.dynamic_sampling:
            first.sampled_groups = want
            return first
        kept, spare, rounds = [], [], 0
        batch = first
        while True:
            signal = select_groups_with_signal(batch.rewards, self.group_size)
            kept.append(_select_groups(batch, np.flatnonzero(signal), self.group_size))
            spare.append(_select_groups(batch, np.flatnonzero(~signal), self.group_size))
            have = sum(len(k.records) for k in kept)
            if self.all_processes(have >= want) or rounds >= self.max_refill_rounds:
                break
            rounds += 1
            records = self.next_records()
            out, handle, t = self.sample(params, records, (seed + 7919 * rounds) % 2**31)
            batch = self.finish(records, out, handle, t)
        merged = _concat([k for k in kept + spare if k.records], self.pad_id)
        result = _select_groups(merged, np.arange(want), self.group_size)
        result.sampled_groups = want * (rounds + 1)
        seen = sum(len(s.records) for s in spare)  # zero-variance groups
        result.dropped_groups = seen - max(want - have, 0)  # less those that fill the batch
        return dataclasses.replace(
            result, sample_time=merged.sample_time, score_time=merged.score_time
        )


def warn_reward_failures(scores: Any, rows: int, warned: set[str]) -> None:
    """Logs a warning the first time a reward term raises or times out (its value is then 0
    for the row, counted in ``reward/errors/<key>`` / ``reward/timeouts/<key>``), with an
    example message; ``warned`` holds the terms already reported (this process's rows)."""
    for key in sorted(set(scores.errors) | set(scores.timeouts)):
        failed = scores.errors.get(key, 0) + scores.timeouts.get(key, 0)
        if failed and key not in warned:
            warned.add(key)
            example = (scores.error_messages.get(key) or ["(timed out)"])[0]
            log.warning(
                "reward %r failed on %d of %d rows of this process (scored 0; counted in "
                "reward/errors/%s and reward/timeouts/%s from now on), e.g. %s",
                key, failed, rows, key, key, example,
            )  # fmt: skip
