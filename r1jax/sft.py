"""Supervised fine-tuning: cold-start SFT, distillation and rejection-sampling SFT.

Data: ``(prompt, completion)`` text pairs. Each becomes ``prompt ids + completion ids + EOS``;
the loss is the mean token cross-entropy over the completion tokens (EOS included), never the
prompt. Rows are RIGHT padded to ``max_len`` or, with ``pack=True``, several examples share a
row: ``segment_ids`` keep attention inside each example and ``positions`` restart at 0 for
each one, so a packed row has exactly the loss of its examples laid out one per row.

Device side: :func:`sft_loss` runs in the jitted step of :mod:`r1jax.train_loop` (explicit
shardings, donated state), which also runs the resumable host loop. Log-probs are formed
chunk by chunk with :func:`r1jax.rl.logprobs.token_logprobs` (no ``[B, T, V]`` tensor);
hidden state ``t`` predicts token ``t + 1``.

Multi-process (a mesh over several JAX processes): every process builds the same batches (same
examples and seed) and places the rows of its own devices, so the run equals a one-process run.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from r1jax import sharding as shd
from r1jax.config import ConfigError
from r1jax.model import Segments, Transformer
from r1jax.rl.logprobs import model_head, token_logprobs
from r1jax.tokenizer import Tokenizer
from r1jax.train_loop import (
    check_batch_fits,
    check_positive,
    make_train_step,
    model_mesh,
    run_train_loop,
)

log = logging.getLogger(__name__)

DEVICE_KEYS = ("tokens", "input_mask", "loss_mask", "positions", "segment_ids")
"""The ``[B, L]`` arrays of a batch that the train step reads."""
OVERLONG = ("error", "truncate", "drop")

Example = tuple[str, str]
Sequences = list[tuple[list[int], int]]  # (prompt + completion + EOS ids, prompt length)


# ---------------------------------------------------------------- host side: batches


def tokenize_examples(tokenizer: Tokenizer, examples: Sequence[Example]) -> Sequences:
    """Token ids of each ``(prompt, completion)``: ``(prompt + completion + [EOS], len(prompt))``.

    The prompt gets the tokenizer's default BOS; the completion none. A prompt must have at
    least one token (position ``t`` predicts token ``t + 1``, so the first token is never a
    target).
    """
    if isinstance(examples, (str, bytes)) or not len(examples):
        raise ValueError("SFT examples must be a non-empty list of (prompt, completion) pairs")
    out = []
    for i, ex in enumerate(examples):
        if not (isinstance(ex, Sequence) and len(ex) == 2 and all(isinstance(s, str) for s in ex)):
            raise ValueError(f"SFT example {i} must be a (prompt, completion) pair of str: {ex!r}")
        try:
            prompt = tokenizer.encode(ex[0])
            completion = tokenizer.encode(ex[1], add_bos=False) + [tokenizer.eos_id]
        except ValueError as e:  # e.g. a character outside a char vocabulary
            raise ConfigError(f"SFT example {i} (prompt {ex[0][:60]!r}) cannot be tokenized: {e}"
                              ) from None  # fmt: skip
        if not prompt:
            raise ValueError(f"SFT example {i} has an empty prompt (and no BOS is added)")
        out.append((prompt + completion, len(prompt)))
    return out


def fit_sequences(
    seqs: Sequences, max_len: int, overlong: str = "error"
) -> tuple[Sequences, int, int]:
    """Apply the over-long policy: returns ``(kept sequences, num_truncated, num_dropped)``.

    ``overlong``: ``"error"`` raises naming the example, ``"truncate"`` keeps the first
    ``max_len`` tokens (the EOS is lost: the example teaches an unfinished answer; one whose
    prompt alone fills ``max_len`` has no target token left and is dropped), ``"drop"`` leaves
    it out.
    """
    if overlong not in OVERLONG:
        raise ValueError(f"overlong={overlong!r} must be one of {OVERLONG}")
    if not isinstance(max_len, int) or max_len < 2:
        raise ValueError(f"max_len={max_len!r} must be an int >= 2")
    kept, truncated, dropped = [], 0, 0
    for i, (ids, n_prompt) in enumerate(seqs):
        if len(ids) <= max_len:
            kept.append((ids, n_prompt))
        elif overlong == "error":
            raise ValueError(
                f"SFT example {i} has {len(ids)} tokens (prompt {n_prompt}) > max_len={max_len}; "
                "pass overlong='truncate' or overlong='drop'"
            )
        elif overlong == "truncate" and n_prompt < max_len:
            kept.append((ids[:max_len], n_prompt))
            truncated += 1
        else:
            dropped += 1
    if not kept:
        raise ValueError(f"all {len(seqs)} SFT examples are longer than max_len={max_len}")
    return kept, truncated, dropped


def pack_rows(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """Best-fit packing: lists of example indices whose lengths sum to at most ``max_len``.

    Each example (in the given order) goes to the open row with the least room that still
    fits it, else to a new row. Deterministic for a given order.
    """
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, row index)
    for i, n in enumerate(lengths):
        if n > max_len:
            raise ValueError(f"example {i} has length {n} > max_len={max_len}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, r = free.pop(k)
            rows[r].append(i)
        else:
            room, r = max_len, len(rows)
            rows.append([i])
        if room - n > 0:
            bisect.insort(free, (room - n, r))
    return rows


def assemble_rows(
    seqs: Sequences, rows: Sequence[Sequence[int]], max_len: int, pad_id: int
) -> dict[str, np.ndarray]:
    """``[B, L]`` arrays for ``rows`` (each a list of indices into ``seqs``), ``L = max_len``.

    Returns ``tokens`` int32 (``pad_id`` on padding), ``input_mask`` bool, ``loss_mask``
    float32 (1 on completion tokens incl. EOS), ``positions`` int32 (restarting at 0 for every
    segment), ``segment_ids`` int32 (1, 2, ... per example in the row; 0 on padding).
    """
    dtypes = (np.int32, bool, np.float32, np.int32, np.int32)
    out = {k: np.zeros((len(rows), max_len), dt) for k, dt in zip(DEVICE_KEYS, dtypes, strict=True)}
    out["tokens"][:] = pad_id
    for r, row in enumerate(rows):
        at = 0
        for s, i in enumerate(row):
            ids, n_prompt = seqs[i]
            end = at + len(ids)
            if end > max_len:
                raise ValueError(f"row {r} needs {end} tokens > max_len={max_len}")
            out["tokens"][r, at:end] = ids
            out["input_mask"][r, at:end] = True
            out["loss_mask"][r, at + n_prompt : end] = 1.0
            out["positions"][r, at:end] = np.arange(len(ids))
            out["segment_ids"][r, at:end] = s + 1
            at = end
    return out


def make_sft_batch(
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    max_len: int,
    *,
    pack: bool = False,
    overlong: str = "error",
    num_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """One batch of ``(prompt, completion)`` examples as NumPy arrays.

    Without packing there is one example per row (``B = len(examples)`` minus dropped ones);
    with ``pack=True`` examples share rows (best fit, see :func:`pack_rows`). ``num_rows``
    pads the batch with empty rows to a fixed ``B`` (raises if more rows are needed).

    Returns the ``[B, L]`` arrays of :func:`assemble_rows` (``L = max_len``) plus the 0-d
    counters ``num_truncated`` and ``num_dropped`` (see :func:`fit_sequences`).
    """
    seqs, truncated, dropped = fit_sequences(
        tokenize_examples(tokenizer, examples), max_len, overlong
    )
    rows = _rows_in_order(seqs, max_len, pack)
    if num_rows is not None:
        if len(rows) > num_rows:
            raise ValueError(f"the examples need {len(rows)} rows > num_rows={num_rows}")
        rows = _padded(rows, num_rows)
    batch: dict[str, np.ndarray] = assemble_rows(seqs, rows, max_len, tokenizer.pad_id)
    batch["num_truncated"] = np.asarray(truncated)
    batch["num_dropped"] = np.asarray(dropped)
    return batch


def _rows_in_order(seqs: Sequences, max_len: int, pack: bool) -> list[list[int]]:
    """The rows (lists of indices into ``seqs``) of the examples in their order: best-fit
    packed (:func:`pack_rows`), or one example per row."""
    if pack:
        return pack_rows([len(ids) for ids, _ in seqs], max_len)
    return [[i] for i in range(len(seqs))]


def _padded(rows: list[list[int]], num_rows: int) -> list[list[int]]:
    """``rows`` with empty rows appended up to ``num_rows``."""
    return rows + [[] for _ in range(num_rows - len(rows))]


# ---------------------------------------------------------------- device side: loss and step


def _argmax_hits(
    hidden: jax.Array, lm_head: jax.Array, targets: jax.Array, chunk: int
) -> jax.Array:
    """``[B, T]`` float32: 1 where ``targets`` is the argmax of ``hidden @ lm_head`` (chunked)."""
    b, t, d = hidden.shape
    c = min(chunk, t)
    n = -(-t // c)
    pad = n * c - t
    h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, d).swapaxes(0, 1)
    tgt = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)

    def one(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        hc, tc = args
        logits = jnp.einsum("bcd,dv->bcv", hc, lm_head, preferred_element_type=jnp.float32)
        taken = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
        return (taken >= jnp.max(logits, axis=-1)).astype(jnp.float32)

    return jax.lax.map(one, (h, tgt)).swapaxes(0, 1).reshape(b, n * c)[:, :t]


def sft_loss(
    graphdef: nnx.GraphDef, state: nnx.State, batch: Mapping[str, jax.Array], chunk_size: int = 256
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked mean token cross-entropy over all completion tokens of the batch.

    ``batch`` holds the ``[B, L]`` arrays of :data:`DEVICE_KEYS`. Returns ``(loss, metrics)``
    with metrics ``loss``, ``accuracy`` (greedy next-token accuracy on the same tokens) and
    ``tokens`` (number of target tokens).
    """
    model = nnx.merge(graphdef, state)
    tokens = batch["tokens"]
    mask = Segments(jnp.where(batch["input_mask"], batch["segment_ids"], 0))
    # packed rows restart positions per example, so they stay below the row length
    hidden, _ = model(
        tokens, batch["positions"], mask, return_hidden=True, max_position=tokens.shape[1]
    )
    hidden, targets = hidden[:, :-1], tokens[:, 1:]  # hidden t predicts token t + 1
    weights = batch["loss_mask"][:, 1:].astype(jnp.float32)
    lm_head = model.lm_head_weight()  # master weights; projected in the compute dtype
    logp, _ = token_logprobs(hidden, model_head(model), targets, chunk_size)
    count = jnp.sum(weights)
    denom = jnp.maximum(count, 1.0)
    loss = -jnp.sum(logp * weights) / denom
    hits = _argmax_hits(
        jax.lax.stop_gradient(hidden),
        jax.lax.stop_gradient(lm_head).astype(hidden.dtype),
        targets,
        chunk_size,
    )
    metrics = {"loss": loss, "accuracy": jnp.sum(hits * weights) / denom, "tokens": count}
    return loss, metrics


def make_sft_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
    chunk_size: int = 256,
    grad_accum: int = 1,
) -> tuple[Callable, Callable[[nnx.State], Any], Any]:
    """The jitted SFT step and its optimizer-state initialiser (see
    :func:`r1jax.train_loop.make_train_step`; ``grad_accum`` micro-batches weighted by their
    target tokens); metrics ``loss``, ``accuracy``, ``tokens``, ``grad_norm``."""
    loss = functools.partial(sft_loss, chunk_size=chunk_size)
    return make_train_step(
        loss, DEVICE_KEYS, graphdef, state, tx, mesh, rules, grad_accum, weight_key="tokens"
    )


# ---------------------------------------------------------------- host loop


def _epoch_rows(
    seqs: Sequences, max_len: int, pack: bool, seed: int, epoch: int
) -> list[list[int]]:
    """The rows (lists of example indices) of epoch ``epoch``, shuffled by
    ``rng([seed, epoch])``."""
    order = np.random.default_rng([seed, epoch]).permutation(len(seqs))
    if pack:
        rows = pack_rows([len(seqs[i][0]) for i in order], max_len)
        return [[int(order[j]) for j in row] for row in rows]
    return [[int(i)] for i in order]


def _row_stream(seqs: Sequences, max_len: int, pack: bool, seed: int) -> Iterator[list[int]]:
    """Rows of example indices forever, epoch after epoch."""
    for epoch in itertools.count():
        yield from _epoch_rows(seqs, max_len, pack, seed, epoch)


def make_sft_evaluator(
    model: Transformer,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    *,
    rows_per_batch: int,
    max_len: int,
    pack: bool = False,
    overlong: str = "truncate",
    mesh: Mesh | None = None,
    chunk_size: int = 256,
) -> Callable[[nnx.State, int], dict[str, float]]:
    """The held-out metrics of SFT: ``evaluate(state, step)`` (``state``: the model's
    ``nnx.Param`` state; ``step`` unused) runs :func:`sft_loss` over ``examples`` in batches
    of ``rows_per_batch`` rows of ``max_len`` (the last padded with empty rows: one compile)
    and returns ``eval_loss`` and ``eval_accuracy``, means over all their completion tokens,
    and ``eval_tokens``."""
    seqs, _, _ = fit_sequences(tokenize_examples(tokenizer, examples), max_len, overlong)
    if not seqs:
        raise ValueError(f"no held-out SFT example fits max_len={max_len}")
    rows = _rows_in_order(seqs, max_len, pack)
    batches = [
        assemble_rows(seqs, _padded(rows[at : at + rows_per_batch], rows_per_batch), max_len,
                      tokenizer.pad_id)
        for at in range(0, len(rows), rows_per_batch)
    ]  # fmt: skip
    graphdef, state = nnx.split(model, nnx.Param)
    mesh = mesh if mesh is not None else model_mesh(state)
    batch_sh = shd.batch_sharding(mesh, 2)
    metrics_of = jax.jit(lambda st, batch: sft_loss(graphdef, st, batch, chunk_size)[1])

    def evaluate(state: nnx.State, step: int = 0) -> dict[str, float]:
        got = []
        for arrays in batches:
            batch = {k: shd.global_from_full(arrays[k], batch_sh) for k in DEVICE_KEYS}
            got.append(metrics_of(state, batch))
        got = jax.device_get(got)
        tokens = sum(float(m["tokens"]) for m in got)
        mean = lambda k: sum(float(m[k]) * float(m["tokens"]) for m in got) / max(tokens, 1.0)
        return {"eval_loss": mean("loss"), "eval_accuracy": mean("accuracy"), "eval_tokens": tokens}

    return evaluate


def steps_for_epochs(
    seqs: Sequences, epochs: float, batch_size: int, max_len: int, pack: bool, seed: int
) -> int:
    """Steps of ``batch_size`` rows that cover ``epochs`` passes over ``seqs``, rounded up:
    one row per example, or with ``pack`` the rows of the first epoch's packing (later
    epochs pack another order, within a row or so of it)."""
    if not epochs > 0:
        raise ValueError(f"epochs={epochs!r} must be > 0")
    rows = len(seqs)
    if pack:
        rows = len(_epoch_rows(seqs, max_len, pack, seed, 0))
    return max(1, math.ceil(epochs * rows / batch_size))


def train_sft(
    model: Transformer,
    tokenizer: Tokenizer,
    examples: Sequence[Example],
    *,
    steps: int = 0,
    epochs: float = 0.0,
    batch_size: int,
    lr: float,
    max_len: int,
    grad_accum: int = 1,
    mesh: Mesh | None = None,
    seed: int = 0,
    log_every: int = 10,
    progress: bool = True,
    pack: bool = False,
    overlong: str = "error",
    warmup_steps: int = 0,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.99,
    chunk_size: int = 256,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    on_log: Callable[[dict[str, float]], None] | None = None,
    before_checkpoint: Callable[[], None] | None = None,
    eval_examples: Sequence[Example] = (),
    eval_every: int = 0,
    extra_eval: Callable[[nnx.State, int], dict[str, float]] | None = None,
) -> tuple[Transformer, list[dict[str, float]]]:
    """Fine-tune ``model`` on ``(prompt, completion)`` examples for ``steps`` steps (or
    ``epochs`` passes over them: see :func:`steps_for_epochs`; give one of the two).

    Every step sees ``batch_size`` rows of length ``max_len`` (one example per row, or packed
    rows with ``pack=True``), so the step compiles once; ``grad_accum`` > 1 runs them as that
    many micro-batches of ``batch_size / grad_accum`` rows and one update, equal to the
    full-batch step (each micro-batch weighted by its target tokens). Examples are reshuffled
    each epoch from ``seed``; as many epochs as ``steps`` need. ``mesh`` defaults to the mesh
    the model's parameters live on. The model is updated in place (its buffers are donated to
    the step) and returned.

    Resumable with ``checkpoint_dir``: params, optimizer state and the step are saved there
    (Orbax, the layout of :class:`r1jax.checkpoint.RunCheckpointer`) every
    ``checkpoint_every`` steps (0: only at the end), at the end, and when Ctrl-C stops the
    loop (after the current step; then ``KeyboardInterrupt`` is raised). A call with the same
    examples and settings continues from the newest checkpoint there, on the same trajectory
    (the data position is the step); one with other examples, batch size, ``max_len``,
    packing or seed is refused with a :class:`r1jax.checkpoint.CheckpointError` naming them.
    ``before_checkpoint`` runs before each save, after ``on_log`` has had that step (flush a
    metrics writer there).

    Returns ``(model, history)``: one dict every ``log_every`` steps (and at the last) with
    the means over the window of ``loss``, ``accuracy``, ``grad_norm``, ``tokens`` (targets per
    step), plus ``step``, ``lr``, ``step_time_s`` (window wall time / steps, the first window
    includes compilation), ``target_tokens_per_s``, ``num_truncated``, ``num_dropped``. Each
    is also passed to ``on_log``. ``warmup_steps=-1`` picks ``min(20, steps // 10)``.

    ``eval_examples``: held-out examples whose ``eval_loss`` / ``eval_accuracy`` (see
    :func:`make_sft_evaluator`, in micro-batches of ``batch_size / grad_accum`` rows) are
    measured before the first step (``on_log`` only), every ``eval_every`` steps (0: only
    at the end) and after the last step, in that step's log entry. ``extra_eval(state,
    step)``: more metrics measured at the same points (e.g. sampled pass@1).
    """
    from r1jax.sft_checkpoint import SFTCheckpoints

    check_positive(batch_size=batch_size, grad_accum=grad_accum)
    if (steps > 0) == (epochs > 0):
        raise ValueError(f"give one of steps={steps!r} and epochs={epochs!r} (> 0)")
    mesh = mesh if mesh is not None else model_mesh(nnx.state(model, nnx.Param))
    check_batch_fits(batch_size, mesh, f"batch_size={batch_size}", grad_accum)
    seqs, truncated, dropped = fit_sequences(
        tokenize_examples(tokenizer, examples), max_len, overlong
    )
    if epochs:
        steps = steps_for_epochs(seqs, epochs, batch_size, max_len, pack, seed)
    if warmup_steps == -1:
        warmup_steps = min(20, steps // 10)
    if truncated or dropped:
        log.warning(
            "SFT: %d examples truncated, %d dropped (max_len=%d)", truncated, dropped, max_len
        )

    evaluators = []
    if eval_examples:
        evaluators.append(make_sft_evaluator(
            model, tokenizer, eval_examples, rows_per_batch=batch_size // grad_accum,
            max_len=max_len, pack=pack, overlong=overlong, mesh=mesh, chunk_size=chunk_size,
        ))  # fmt: skip
    if extra_eval is not None:
        evaluators.append(extra_eval)

    def evaluate(state: nnx.State, step: int) -> dict[str, float]:
        return {k: v for fn in evaluators for k, v in fn(state, step).items()}

    def batches(first: int) -> Iterator[dict[str, np.ndarray]]:
        rows = itertools.islice(_row_stream(seqs, max_len, pack, seed), first * batch_size, None)
        while True:
            picked = [next(rows) for _ in range(batch_size)]
            yield assemble_rows(seqs, picked, max_len, tokenizer.pad_id)

    identity = dict(examples=SFTCheckpoints.fingerprint(seqs), num_examples=len(seqs),
                    batch_size=batch_size, max_len=max_len, pack=pack, seed=seed)  # fmt: skip
    optimizer = dict(lr=lr, warmup_steps=warmup_steps, schedule=schedule,
                     weight_decay=weight_decay, grad_clip=grad_clip, b1=b1, b2=b2)  # fmt: skip
    return run_train_loop(
        model,
        functools.partial(sft_loss, chunk_size=chunk_size),
        DEVICE_KEYS,
        batches,
        steps=steps,
        optimizer=optimizer,
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
        grad_accum=grad_accum,
        weight_key="tokens",
        evaluate=evaluate if evaluators else None,
        eval_every=eval_every,
    )
