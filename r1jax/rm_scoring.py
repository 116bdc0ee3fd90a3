"""A learned reward in GRPO rollouts: the reward model's score of each completion, next to
the rule rewards of the host scorer (R1's all-scenario RL: rules for reasoning prompts, a
reward model for general ones).

The reward model runs on the accelerator, on the run's mesh. For each completion routed to it
(rows whose ``source`` is in ``sources``; all rows when empty) the host builds the text the
model scores, tokenizes it with the reward model's own tokenizer, right pads it to
``max_len`` (a longer text keeps its last ``max_len`` tokens: the score is read at the end)
and dispatches one jitted forward for the whole batch. :class:`WithRewardModel` wraps the host
:class:`~r1jax.rewards.RewardScorer`: ``submit`` starts both (the forward runs asynchronously
while the host scores), ``result`` merges the score into the weighted total under ``key``.

Texts scored, by ``input``: ``"prompt"``: the policy's prompt text (the record's ``text``,
template applied) + the response + EOS, the layout :mod:`r1jax.rm` trains on; ``"chat"``: the
reward model tokenizer's chat template on ``[user: the record's prompt, assistant: the
response]`` (with the ``<think>`` the policy's prompt opened, when it ends with one), the
layout of Hugging Face reward models. ``scope``: ``"response"`` scores the
whole completion, ``"answer"`` only the text after its last ``</think>`` (R1 judges
helpfulness on the summary only; a completion without ``</think>`` is scored whole).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from r1jax import sharding as shd
from r1jax.model import Transformer
from r1jax.prompts import opened_think
from r1jax.rewards.extract import opens_think
from r1jax.rewards.scorer import ScoreResult
from r1jax.rm import LAYOUTS, encode_scored, make_score_fn, pad_rows
from r1jax.tokenizer import Tokenizer

SCOPES = ("response", "answer")
INPUTS = LAYOUTS
THINK_END = "</think>"


def scored_part(completion: str, scope: str) -> str:
    """The part of ``completion`` the reward model judges (see the module doc)."""
    if scope == "answer" and THINK_END in completion:
        return completion.rsplit(THINK_END, 1)[1].strip()
    return completion


class RewardModelTerm:
    """One learned reward term: a reward model (``num_labels=1``) and its tokenizer.

    Args:
      model: the reward model, on ``mesh``.
      tokenizer: the reward model's tokenizer.
      weight / key: multiplier in the total, label in metrics (``reward/fn/<key>/mean``).
      sources: the record sources it scores (empty: every row).
      scope / input: what text is scored (module doc).
      max_len: tokens per scored row.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        mesh: Mesh,
        rules: Mapping[str, Any] = shd.DEFAULT_RULES,
        *,
        weight: float = 1.0,
        key: str = "reward_model",
        sources: Sequence[str] = (),
        scope: str = "response",
        input: str = "prompt",
        max_len: int = 1024,
    ):
        if model.cfg.num_labels != 1:
            raise ValueError(f"reward model: num_labels={model.cfg.num_labels}, expected 1")
        if scope not in SCOPES:
            raise ValueError(f"reward model scope={scope!r} must be one of {SCOPES}")
        if input not in INPUTS:
            raise ValueError(f"reward model input={input!r} must be one of {INPUTS}")
        if input == "chat" and not tokenizer.chat_template:
            raise ValueError("reward model input='chat' needs a tokenizer with a chat_template")
        self.tokenizer, self.mesh = tokenizer, mesh
        self.weight, self.key, self.sources = float(weight), key, tuple(sources)
        self.scope, self.input, self.max_len = scope, input, int(max_len)
        self.score, self.state = make_score_fn(model, mesh, rules)
        self.sharding = shd.batch_sharding(mesh, 2)
        # where host_to_global puts this process's rows: its batch block, which need not be
        # its process index (meshes whose devices are not in process order)
        self.batch_block, _ = shd.process_batch_shard(mesh)

    def applies(self, row: Mapping[str, Any]) -> bool:
        return not self.sources or str(row.get("source")) in self.sources

    def encode(self, completion: str, row: Mapping[str, Any]) -> list[int]:
        """The reward model's token ids for ``completion`` of ``row``, at most ``max_len``."""
        if self.input == "chat":  # the assistant turn: with the <think> the prompt opened
            prompt = row["prompt"]
            if opens_think(str(row.get("text", ""))):
                completion = opened_think(completion)
        else:  # the policy's model input, which holds that <think>
            prompt = row["text"]
        ids = encode_scored(self.tokenizer, prompt, scored_part(completion, self.scope), self.input)
        return ids[-self.max_len :]

    def dispatch(self, completions: Sequence[str], rows: Sequence[Mapping[str, Any]]):
        """Starts scoring this process's ``completions`` (all processes call it together);
        returns ``(scores, applied)``: a device array ``[R]`` over every process's rows (not
        yet fetched) and this process's ``[R_local]`` bool mask of routed rows."""
        applied = np.array([self.applies(r) for r in rows], bool)
        pad = self.tokenizer.pad_id
        ids = [self.encode(c, r) if a else [pad] for c, r, a in zip(completions, rows, applied,
                                                                    strict=True)]  # fmt: skip
        arrays = pad_rows(ids, self.max_len, pad)
        tokens = shd.host_to_global(arrays["tokens"], self.sharding)
        mask = shd.host_to_global(arrays["input_mask"], self.sharding)
        return self.score(self.state, tokens, mask), applied


@dataclasses.dataclass
class _Pending:
    host: Any  # the host scorer's handle
    model: list[tuple[RewardModelTerm, Any, np.ndarray]]

    def result(self, timeout: float | None = None) -> ScoreResult:
        res = self.host.result(timeout)
        n = len(res.total)
        total = res.total.astype(np.float32).copy()
        for term, scores, applied in self.model:
            rows = slice(term.batch_block * n, (term.batch_block + 1) * n)
            mine = np.asarray(jax.device_get(scores), np.float32)[rows]
            bad = applied & ~np.isfinite(mine)
            values = np.where(applied & ~bad, mine, 0.0).astype(np.float32)
            total += term.weight * values
            res.per_function[term.key] = values
            res.applied[term.key] = applied
            res.timeouts[term.key] = 0
            res.errors[term.key] = int(bad.sum())
            res.error_messages[term.key] = (
                [f"{int(bad.sum())} non-finite reward-model scores"] if bad.any() else []
            )
        res.total = total
        return res

    def done(self) -> bool:
        return self.host.done()


class WithRewardModel:
    """The host scorer plus learned reward terms, with the host scorer's interface
    (``submit``, ``score``, ``keys``, ``close``, context manager)."""

    def __init__(self, host: Any, terms: Sequence[RewardModelTerm]):
        keys = list(host.keys)
        for t in terms:
            if t.key in keys:
                raise ValueError(f"reward key {t.key!r} is used twice (rule reward and model)")
            keys.append(t.key)
        self.host, self.terms, self.keys = host, list(terms), keys

    def submit(self, completions: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> _Pending:
        pending = [(t, *t.dispatch(completions, rows)) for t in self.terms]
        return _Pending(self.host.submit(completions, rows), pending)

    def score(self, completions: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> ScoreResult:
        return self.submit(completions, rows).result()

    @property
    def restarts(self) -> int:
        return self.host.restarts

    def close(self) -> None:
        self.host.close()

    def __enter__(self) -> WithRewardModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
