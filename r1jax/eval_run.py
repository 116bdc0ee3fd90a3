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
from collections.abc import Callable, Mapping, Sequence
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
      routes: record source -> ``(accuracy, answer_of)`` of that source's rows, where the
        scorer routes them to other reward terms (``rewards.routes``); None: the source has no
        rule reward, so its rows cannot be judged.
    """

    accuracy: str
    threshold: float
    answer_of: Callable[[str], str | None]
    routes: Mapping[str, tuple[str, Callable[[str], str | None]] | None] = dataclasses.field(
        default_factory=dict
    )

    def judge_of(self, row: Mapping[str, Any]) -> tuple[str, Callable[[str], str | None]] | None:
        """``(accuracy label, answer_of)`` of the record ``row``: its source's route's, else
        the task's own; None for a source without rule rewards."""
        source = str(row.get("source"))
        return self.routes.get(source, (self.accuracy, self.answer_of))

    def check_records(self, records: Sequence[Mapping[str, Any]], what: str) -> None:
        """Raises ConfigError naming the first record of ``what`` that no reward can judge."""
        from r1jax.config import ConfigError

        for i, row in enumerate(records):
            if self.judge_of(row) is None:
                raise ConfigError(
                    f"{what}: record {row.get('id', i)!r} has source {row.get('source')!r}, "
                    f"which config.rewards.routes gives no rule reward, so no completion of it "
                    "can be judged correct; leave such records out of it, or give the route an "
                    "accuracy term"
                )

    def correct_rows(
        self, records: Sequence[Mapping[str, Any]], per_function: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """``[R]`` float32 of the scored rows of ``records`` (R = len(records) * G, each
        record's G rows together): 1.0 where the row's accuracy reward reaches the threshold,
        0.0 below it, NaN where its source has no rule reward."""
        rows = len(next(iter(per_function.values()))) if per_function else 0
        g = rows // max(len(records), 1)
        out = np.full(rows, np.nan, np.float32)
        for p, row in enumerate(records):
            judge = self.judge_of(row)
            if judge is not None and judge[0] in per_function:
                values = per_function[judge[0]][p * g : (p + 1) * g]
                out[p * g : (p + 1) * g] = values >= self.threshold
        return out


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
    done: Sequence[dict] = (),
    on_block: Callable[[list[dict]], None] | None = None,
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
      done: the results of the first ``len(done)`` records, judged before (a resumed eval,
        :mod:`r1jax.eval_partial`): sampling starts after them.
      on_block: called on every process with each block's results (all processes' rows).

    Returns one dict per record, in record order: ``index``, ``correct`` (k bools),
    ``scores`` (the k accuracy rewards), ``answers`` (k extracted answers or None), ``vote``,
    ``vote_correct``, ``lengths``, ``finish`` (k finish reasons) and, with ``keep_text``,
    ``completions``.
    """
    index, count = data_shard
    k = num_samples
    results = list(done)
    for start in range(len(done), len(records), block_prompts):
        mine: list[dict] = []
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
            per_function = scorer.score(texts, rows).per_function
            for q in range(n):
                judge = task.judge_of(recs[q])
                if judge is None:  # callers check the records first (check_records)
                    raise ValueError(f"no accuracy reward judges record {recs[q].get('id')!r}")
                scores = per_function[judge[0]][: n * k]
                result = _judge(start + lo + q, out, texts, scores, q, k, task.threshold,
                                judge[1], keep_text)  # fmt: skip
                mine.append(result)
        gathered = [r for part in dist.allgather_json(mine) for r in part] if count > 1 else mine
        gathered.sort(key=lambda r: r["index"])
        results += gathered
        if on_block is not None:
            on_block(gathered)
        if progress is not None:
            progress(min(start + block_prompts, len(records)))
    return results


def _judge(
    index: int,
    out: Any,
    texts: Sequence[str],
    scores: np.ndarray,
    q: int,
    k: int,
    threshold: float,
    answer_of: Callable[[str], str | None],
    keep_text: bool,
) -> dict:
    """The result dict of prompt ``q`` of a sampler output (rows ``q*k .. q*k+k-1``)."""
    rows = range(q * k, (q + 1) * k)
    correct = [bool(scores[r] >= threshold) for r in rows]
    answers = [answer_of(texts[r]) for r in rows]
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
