"""Evaluation on held-out prompts: pass@1 from k samples, pass@k, maj@k, greedy accuracy.

One loop serves the trainer's periodic eval and ``r1jax eval``. Prompts go to the sampler in
blocks of ``block_prompts``; with several processes each samples its share of a block (the
sampler is collective, so a process without prompts samples a dummy one and drops it). The
run's reward scorer scores the completions; one is correct when its accuracy reward is at
least ``threshold``. maj@k votes over the answers the k samples give (extracted as the
accuracy reward reads them, :func:`r1jax.evaluate.vote_key`) and is correct when a completion
giving the voted answer is. Every process returns the results of all prompts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from r1jax import distributed as dist
from r1jax.evaluate import summarize, vote
from r1jax.sampling.params import SamplingParams


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """How completions of a prompt are judged.

    Attributes:
      accuracy: label of the accuracy reward in the scorer's results.
      threshold: a completion is correct when that reward is >= this.
      answer_of: completion -> the answer it votes for (None: no answer), for maj@k.
    """

    accuracy: str
    threshold: float
    answer_of: Callable[[str], str | None]


def evaluate_prompts(
    sampler: Any,
    params: Any,
    records: Sequence[dict],
    scorer: Any,
    task: EvalTask,
    sampling: SamplingParams,
    num_samples: int,
    block_prompts: int,
    data_shard: tuple[int, int] = (0, 1),
    keep_text: bool = False,
    progress: Callable[[int], None] | None = None,
    first_id: int = 0,
) -> list[dict]:
    """Samples ``num_samples`` (k) completions of each record's ``text`` and judges them.

    Record ``i``'s samples draw with the sampler's draw id ``first_id + i``
    (:meth:`r1jax.sampling.Sampler.generate`), so they do not depend on ``block_prompts``,
    the number of processes or how many records follow it.

    Args:
      sampler: a :class:`r1jax.sampling.Sampler`; ``params`` its model weights.
      records: held-out rows with the model input in ``"text"`` and the fields the rewards
        read (``answer``, ``numbers``, ...). Every process passes the same list.
      data_shard: ``(this process's index, number of processes)``.
      keep_text: also return the completions' text.
      progress: called with the number of prompts done after each block (primary or not).

    Returns one dict per record, in record order: ``index``, ``correct`` (k bools),
    ``scores`` (the k accuracy rewards), ``answers`` (k extracted answers or None), ``vote``,
    ``vote_correct``, ``lengths``, ``finish`` (k finish reasons) and, with ``keep_text``,
    ``completions``.
    """
    index, count = data_shard
    k = num_samples
    mine: list[dict] = []
    for start in range(0, len(records), block_prompts):
        block = records[start : start + block_prompts]
        per = -(-len(block) // count)  # prompts per process (the last may have fewer)
        lo = min(index * per, len(block))
        recs = block[lo : lo + per]
        n = len(recs)
        ids = [first_id + start + lo + q for q in range(max(n, 1))]
        inputs = [r["text"] for r in (recs or block[:1])]  # (a process with none: a dummy)
        out = sampler.generate(params, inputs, k, sampling, draw_ids=ids)
        if n:
            rows = [recs[j // k] for j in range(n * k)]
            texts = out.texts[: n * k]
            scores = scorer.score(texts, rows).per_function[task.accuracy][: n * k]
            for q in range(n):
                mine.append(_judge(start + lo + q, out, texts, scores, q, k, task, keep_text))
        if progress is not None:
            progress(min(start + block_prompts, len(records)))
    results = [r for part in dist.allgather_json(mine) for r in part] if count > 1 else mine
    return sorted(results, key=lambda r: r["index"])


def _judge(
    index: int,
    out: Any,
    texts: Sequence[str],
    scores: np.ndarray,
    q: int,
    k: int,
    task: EvalTask,
    keep_text: bool,
) -> dict:
    """The result dict of prompt ``q`` of a sampler output (rows ``q*k .. q*k+k-1``)."""
    rows = range(q * k, (q + 1) * k)
    correct = [bool(scores[r] >= task.threshold) for r in rows]
    answers = [task.answer_of(texts[r]) for r in rows]
    voted, voted_correct = vote(answers, correct)
    result = {
        "index": index,
        "correct": correct,
        "scores": [float(scores[r]) for r in rows],
        "answers": answers,
        "vote": voted,
        "vote_correct": voted_correct,
        "lengths": [int(out.lengths[r]) for r in rows],
        "finish": [str(out.finish_reason[r]) for r in rows],
    }
    if keep_text:
        result["completions"] = [texts[r] for r in rows]
    return result


def summarize_results(results: Sequence[dict]) -> dict[str, float]:
    """Means over prompts: ``pass@1`` (the mean over k samples), and for k > 1 ``pass@k``
    (unbiased estimator) and ``maj@k``; ``length_mean`` (completion tokens) and ``truncated``
    (fraction of completions that hit the length limit)."""
    if not results:
        raise ValueError("no evaluation results to summarize")
    correct = np.array([r["correct"] for r in results], bool)  # [Q, k]
    k = correct.shape[1]
    out = summarize(correct, ks=(1, k))
    if k > 1:
        out[f"maj@{k}"] = float(np.mean([r["vote_correct"] for r in results]))
    out["length_mean"] = float(np.mean([r["lengths"] for r in results]))
    out["truncated"] = float(np.mean([[f == "length" for f in r["finish"]] for r in results]))
    return out


GROUP_FIELDS = ("source", "level", "type", "year")
"""Record fields an evaluation is broken down by, when the prompts differ in them (the task
family of a mixed file, MATH's level and subject, AIME's year)."""


def summarize_groups(
    records: Sequence[dict], results: Sequence[dict], fields: Sequence[str] = GROUP_FIELDS
) -> dict[str, dict[str, dict[str, float]]]:
    """``{field: {value: summary + {"prompts": n}}}`` (:func:`summarize_results` of each
    group) for every field of ``fields`` that takes at least two values over ``records``
    (aligned with ``results``); values are sorted, as strings."""
    out = {}
    for field in fields:
        values = [str(r[field]) if r.get(field) is not None else None for r in records]
        distinct = sorted({v for v in values if v is not None})
        if len(distinct) < 2:
            continue
        out[field] = {}
        for value in distinct:
            group = [res for res, v in zip(results, values, strict=True) if v == value]
            out[field][value] = summarize_results(group) | {"prompts": len(group)}
    return out
