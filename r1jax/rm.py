"""Reward models (R1's all-scenario RL): Bradley-Terry training on preference pairs, scoring.

A reward model is a :class:`~r1jax.model.Transformer` with ``num_labels=1``: a ``score [D, 1]``
head read at each row's last real token (the HF ``*ForSequenceClassification`` layout, so it
exports to and loads from ``transformers``).

Data: ``(prompt, chosen, rejected)`` text triples. Each response becomes ``prompt ids +
response ids + EOS`` (as in SFT, so the score is read at the EOS), right padded to
``max_len``. A batch of B pairs is ``2B`` rows: the B chosen rows, then the B rejected ones.
The loss is Bradley-Terry's ``-log sigmoid(r_chosen - r_rejected)`` averaged over pairs, plus
optionally ``center_coef * mean((r_chosen + r_rejected)^2)``, which keeps scores near 0
(TRL's ``center_rewards_coefficient``).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from r1jax import sharding as shd
from r1jax.config import ConfigError
from r1jax.model import Transformer
from r1jax.tokenizer import Tokenizer
from r1jax.train_loop import check_batch_fits, check_positive, model_mesh, run_train_loop

log = logging.getLogger(__name__)

DEVICE_KEYS = ("tokens", "input_mask")
"""The ``[2B, L]`` arrays of a pair batch that the train step reads."""
OVERLONG = ("error", "truncate", "drop")

Pair = tuple[str, str, str]  # (prompt, chosen response, rejected response)
TokenPair = tuple[list[int], list[int]]  # (prompt + chosen + EOS ids, prompt + rejected + EOS)


# ---------------------------------------------------------------- host side: batches


LAYOUTS = ("prompt", "chat")
"""What text a reward model reads (``reward_model.input``), see :func:`encode_scored`."""


def encode_scored(
    tokenizer: Tokenizer, prompt: str | Sequence[Mapping[str, Any]], response: str,
    layout: str = "prompt",
) -> list[int]:  # fmt: skip
    """The ids a reward model scores. ``layout="prompt"``: ``prompt`` (the policy's model
    input, template applied; + default BOS) + ``response`` + EOS; ``"chat"``: the
    tokenizer's chat template on ``[user: prompt (or a list of messages), assistant:
    response]``, the layout of Hugging Face reward models."""
    if layout == "chat":
        from r1jax.prompts import render_chat

        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [*prompt]
        messages.append({"role": "assistant", "content": response})
        text = render_chat(tokenizer.chat_template, messages, **tokenizer.special_tokens_map)
        return tokenizer.encode(text)  # one BOS, also where the template writes one
    return tokenizer.encode(prompt) + tokenizer.encode(response, add_bos=False) + [tokenizer.eos_id]


def tokenize_pairs(
    tokenizer: Tokenizer, pairs: Sequence[Pair], layout: str = "prompt"
) -> list[TokenPair]:
    """Token ids of each ``(prompt, chosen, rejected)`` (see :func:`encode_scored`)."""
    if isinstance(pairs, (str, bytes)) or not len(pairs):
        raise ValueError("reward-model pairs must be a non-empty list of (prompt, chosen, rejected)"
                         " triples")  # fmt: skip
    out = []
    for i, p in enumerate(pairs):
        if not (isinstance(p, Sequence) and len(p) == 3 and all(isinstance(s, str) for s in p)):
            raise ValueError(f"pair {i} must be a (prompt, chosen, rejected) triple of str: {p!r}")
        try:
            out.append(tuple(encode_scored(tokenizer, p[0], r, layout) for r in p[1:]))
        except ValueError as e:  # e.g. a character outside a char vocabulary
            raise ConfigError(f"reward-model pair {i} (prompt {p[0][:60]!r}) cannot be tokenized: "
                              f"{e}") from None  # fmt: skip
    return out


def fit_pairs(
    seqs: Sequence[TokenPair], max_len: int, overlong: str = "error"
) -> tuple[list[TokenPair], int, int]:
    """Apply the over-long policy: returns ``(kept pairs, num_truncated, num_dropped)``.

    ``overlong``: ``"error"`` raises naming the pair, ``"truncate"`` keeps the LAST
    ``max_len`` tokens of a long row (the score is read at its end; the prompt's start is
    lost), ``"drop"`` leaves the pair out.
    """
    if overlong not in OVERLONG:
        raise ValueError(f"overlong={overlong!r} must be one of {OVERLONG}")
    if not isinstance(max_len, int) or max_len < 2:
        raise ValueError(f"max_len={max_len!r} must be an int >= 2")
    kept, truncated, dropped = [], 0, 0
    for i, (chosen, rejected) in enumerate(seqs):
        longest = max(len(chosen), len(rejected))
        if longest <= max_len:
            kept.append((chosen, rejected))
        elif overlong == "error":
            raise ValueError(
                f"reward-model pair {i} has a row of {longest} tokens > max_len={max_len}; "
                "pass overlong='truncate' or overlong='drop'"
            )
        elif overlong == "truncate":
            kept.append((chosen[-max_len:], rejected[-max_len:]))
            truncated += 1
        else:
            dropped += 1
    if not kept:
        raise ValueError(f"all {len(seqs)} reward-model pairs are longer than max_len={max_len}")
    return kept, truncated, dropped


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded ``tokens`` int32 and ``input_mask`` bool, both ``[len(rows), length]``."""
    tokens = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), bool)
    for r, ids in enumerate(rows):
        if len(ids) > length:
            raise ValueError(f"row {r} has {len(ids)} tokens > {length}")
        tokens[r, : len(ids)] = ids
        mask[r, : len(ids)] = True
    return {"tokens": tokens, "input_mask": mask}


def assemble_pairs(
    seqs: Sequence[TokenPair], picked: Sequence[int], max_len: int, pad_id: int
) -> dict[str, np.ndarray]:
    """``[2B, L]`` arrays of the pairs ``picked`` (indices into ``seqs``): rows ``0..B-1`` the
    chosen responses, rows ``B..2B-1`` the rejected ones (``L = max_len``)."""
    rows = [seqs[i][0] for i in picked] + [seqs[i][1] for i in picked]
    return pad_rows(rows, max_len, pad_id)


# ---------------------------------------------------------------- device side


def reward_scores(
    graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array, input_mask: jax.Array
) -> jax.Array:
    """``[B]`` float32 rewards of ``tokens [B, T]`` (real tokens contiguous per row)."""
    model = nnx.merge(graphdef, state)
    return model.sequence_scores(tokens, input_mask)[:, 0]


def bradley_terry_loss(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    batch: Mapping[str, jax.Array],
    center_coef: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean ``-log sigmoid(r_chosen - r_rejected)`` (+ the centering term) over the pairs of
    ``batch`` (``[2B, L]`` arrays, chosen rows first).

    Returns ``(loss, metrics)``: ``loss``, ``accuracy`` (fraction with ``r_chosen >
    r_rejected``), ``margin`` (mean ``r_chosen - r_rejected``), ``chosen`` / ``rejected``
    (mean scores), ``tokens`` (real tokens in the batch).
    """
    scores = reward_scores(graphdef, state, batch["tokens"], batch["input_mask"])
    b = scores.shape[0] // 2
    chosen, rejected = scores[:b], scores[b:]
    diff = chosen - rejected
    loss = -jnp.mean(jax.nn.log_sigmoid(diff))
    if center_coef:
        loss = loss + center_coef * jnp.mean((chosen + rejected) ** 2)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean((diff > 0).astype(jnp.float32)),
        "margin": jnp.mean(diff),
        "chosen": jnp.mean(chosen),
        "rejected": jnp.mean(rejected),
        "tokens": jnp.sum(batch["input_mask"].astype(jnp.float32)),
    }
    return loss, metrics


def make_score_fn(model: Transformer, mesh: Mesh, rules: Mapping[str, Any] = shd.DEFAULT_RULES):
    """``(score, state)``: ``score(state, tokens [B, T], input_mask [B, T]) -> [B]`` float32,
    jitted with the batch split over data * fsdp and the result replicated; ``state`` is the
    model's parameters on ``mesh``. Models of one structure and placement share one jitted
    function (evaluation before and after training compiles once)."""
    graphdef, state = nnx.split(model, nnx.Param)
    state_sh = shd.state_shardings(state, mesh, rules)
    leaves, treedef = jax.tree.flatten(state_sh)
    return _score_program(graphdef, mesh, tuple(leaves), treedef), jax.device_put(state, state_sh)


@functools.lru_cache(maxsize=8)
def _score_program(graphdef: nnx.GraphDef, mesh: Mesh, state_sh: tuple, treedef: Any) -> Any:
    batch_sh = shd.batch_sharding(mesh, 2)
    return jax.jit(
        shd.on_mesh(functools.partial(reward_scores, graphdef), mesh),
        in_shardings=(jax.tree.unflatten(treedef, state_sh), batch_sh, batch_sh),
        out_shardings=shd.replicated(mesh),
    )


# ---------------------------------------------------------------- training and evaluation


def _check_reward_model(model: Transformer) -> None:
    if model.cfg.num_labels != 1:
        raise ValueError(
            f"a reward model has one score (num_labels=1), this model has "
            f"num_labels={model.cfg.num_labels}; load it with num_labels=1 (see "
            "r1jax.model.hf.load_hf_model) or build it with ModelConfig(num_labels=1)"
        )


def _pair_stream(num_pairs: int, seed: int) -> Iterator[int]:
    """Pair indices forever; epoch ``e`` is shuffled by ``rng([seed, e])``."""
    for epoch in itertools.count():
        yield from (int(i) for i in np.random.default_rng([seed, epoch]).permutation(num_pairs))


def train_reward_model(
    model: Transformer,
    tokenizer: Tokenizer,
    pairs: Sequence[Pair],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    max_len: int,
    grad_accum: int = 1,
    mesh: Mesh | None = None,
    seed: int = 0,
    center_coef: float = 0.0,
    overlong: str = "error",
    log_every: int = 10,
    progress: bool = True,
    optimizer: Mapping[str, Any] | None = None,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    on_log: Callable[[dict[str, float]], None] | None = None,
    before_checkpoint: Callable[[], None] | None = None,
    layout: str = "prompt",
) -> tuple[Transformer, list[dict[str, float]]]:
    """Trains the reward model ``model`` (``num_labels=1``) on ``(prompt, chosen, rejected)``
    triples (read as ``layout`` says: :func:`encode_scored`) for ``steps`` steps of
    ``batch_size`` pairs (``2 * batch_size`` rows of ``max_len``; one compile). Pairs are
    reshuffled each epoch from ``seed``. ``grad_accum`` > 1 runs each step as that many
    micro-batches of ``batch_size / grad_accum`` pairs and one update (the same gradient as
    the full batch).

    ``optimizer``: further :func:`r1jax.optim.make_optimizer` arguments (``warmup_steps``,
    ``schedule``, ``weight_decay``, ``grad_clip``, ``b1``, ``b2``). Checkpointing, resuming
    and ``before_checkpoint`` work as in :func:`r1jax.sft.train_sft` (a resume with other
    pairs, batch size, ``max_len``, seed or ``center_coef`` is refused). Returns ``(model,
    history)``; history entries hold the window means of ``loss``, ``accuracy``, ``margin``,
    ``chosen``, ``rejected``, ``grad_norm``, ``tokens`` with ``step``, ``lr``,
    ``step_time_s``, ``num_truncated``, ``num_dropped``.
    """
    from r1jax.sft_checkpoint import SFTCheckpoints

    _check_reward_model(model)
    check_positive(batch_size=batch_size, grad_accum=grad_accum)
    if batch_size % grad_accum:
        raise ValueError(f"batch_size={batch_size} pairs do not split into grad_accum={grad_accum}")
    mesh = mesh if mesh is not None else model_mesh(nnx.state(model, nnx.Param))
    rows = f"2 * batch_size={2 * batch_size} rows"
    check_batch_fits(2 * batch_size, mesh, rows, grad_accum)
    seqs, truncated, dropped = fit_pairs(tokenize_pairs(tokenizer, pairs, layout), max_len,
                                         overlong)  # fmt: skip
    if truncated or dropped:
        log.warning(
            "reward model: %d pairs truncated, %d dropped (max_len=%d)",
            truncated, dropped, max_len,
        )  # fmt: skip

    def batches(first: int) -> Iterator[dict[str, np.ndarray]]:
        order = itertools.islice(_pair_stream(len(seqs), seed), first * batch_size, None)
        while True:
            picked = [next(order) for _ in range(batch_size)]
            yield assemble_pairs(seqs, picked, max_len, tokenizer.pad_id)

    flat = [(ids, 0) for pair in seqs for ids in pair]
    identity = dict(examples=SFTCheckpoints.fingerprint(flat), num_examples=len(seqs),
                    batch_size=batch_size, max_len=max_len, seed=seed,
                    center_coef=center_coef)  # fmt: skip
    return run_train_loop(
        model,
        functools.partial(bradley_terry_loss, center_coef=center_coef),
        DEVICE_KEYS,
        batches,
        steps=steps,
        optimizer={"lr": lr, **(optimizer or {})},
        mesh=mesh,
        rules=rules,
        log_every=log_every,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        identity=identity,
        on_log=on_log,
        before_checkpoint=before_checkpoint,
        extra_log={"num_truncated": truncated, "num_dropped": dropped},
        name="reward model",
        postfix=("loss", "accuracy"),
        grad_accum=grad_accum,  # row r -> micro-batch r % k keeps chosen row i with rejected B+i
        save_base=True,  # (its base is a merge of the policy's adapters, computed per run)
    )


def evaluate_pairs(
    model: Transformer,
    tokenizer: Tokenizer,
    pairs: Sequence[Pair],
    *,
    max_len: int,
    batch_size: int,
    mesh: Mesh | None = None,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
    layout: str = "prompt",
) -> dict[str, float]:
    """Held-out preference metrics of a reward model (pairs read as ``layout`` says):
    ``accuracy`` (fraction of pairs with ``r_chosen > r_rejected``), ``loss`` (mean
    Bradley-Terry loss), ``margin``, ``chosen``, ``rejected`` (means), ``pairs`` (number
    scored). Over-long rows keep their last
    ``max_len`` tokens. Pairs go ``batch_size`` at a time (the last batch padded with empty
    rows that are not counted), so this compiles once."""
    _check_reward_model(model)
    mesh = mesh if mesh is not None else model_mesh(nnx.state(model, nnx.Param))
    check_batch_fits(2 * batch_size, mesh, f"2 * batch_size={2 * batch_size} rows")
    seqs, _, _ = fit_pairs(tokenize_pairs(tokenizer, pairs, layout), max_len, "truncate")
    score, state = make_score_fn(model, mesh, rules)
    batch_sh = shd.batch_sharding(mesh, 2)
    chosen, rejected = [], []
    for start in range(0, len(seqs), batch_size):
        part = seqs[start : start + batch_size]
        filler = [[tokenizer.pad_id]] * (batch_size - len(part))
        rows = [c for c, _ in part] + filler + [r for _, r in part] + filler
        arrays = pad_rows(rows, max_len, tokenizer.pad_id)
        out = np.asarray(score(state, *(shd.global_from_full(arrays[k], batch_sh)
                                        for k in DEVICE_KEYS)))  # fmt: skip
        chosen.append(out[: len(part)])
        rejected.append(out[batch_size : batch_size + len(part)])
    c, r = np.concatenate(chosen), np.concatenate(rejected)
    diff = (c - r).astype(np.float64)
    return {
        "accuracy": float(np.mean(diff > 0)),
        "loss": float(np.mean(np.logaddexp(0.0, -diff))),
        "margin": float(np.mean(diff)),
        "chosen": float(np.mean(c)),
        "rejected": float(np.mean(r)),
        "pairs": float(len(seqs)),
    }
