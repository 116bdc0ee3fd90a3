"""The GRPO update: pure functions of (params, opt_state, rollout batch), jitted once.

A rollout batch holds R = prompts * G completions, each row ``prompt (P, left padded) +
completion (N, right padded)``:

- ``tokens [R, L]`` int32, ``L = P + N``
- ``input_mask [R, L]`` bool (real tokens: one contiguous run per row, as rollouts are;
  attention uses it as a :class:`~r1jax.model.RowSpan`)
- ``loss_mask [R, N]`` float32 (completion tokens that count in the loss)
- ``advantages [R]`` float32
- optional ``sampler_logp [R, N]``: the sampler's policy log-probs of the same tokens; adds
  the metrics ``sampler_logp_abs_diff`` and ``sampler_kl`` (mean over tokens) against the
  trainer's log-probs of the sampling policy (a numerics check: bf16 caches, kernels).
- optional ``old_logp [R, N]`` (when the policy moves within one batch: mu > 1 or several
  minibatches) and ``ref_logp [R, N]`` (beta > 0), both computed on device by
  :func:`completion_logprobs` before the update.

One call runs ``num_iterations`` passes; each pass splits the batch into ``num_minibatches``
optimizer updates, each accumulating gradients over ``grad_accum`` micro-batches with
``lax.scan``. Prompts (blocks of ``group_size`` rows) are dealt to micro-batches round-robin,
so every micro-batch keeps whole groups, from every data shard.

Shared prompts: with ``group_size = G > 1`` the G rows of a group must carry the same prompt
(rows ``i*G .. i*G+G-1``, as the sampler returns them). The prompt is then run through the
model once per group and its keys/values are shared by the G completions, the way the
sampler prefills; gradients through the shared keys/values sum over the group. Same result
as the per-row forward pass, with ``(G-1)/G`` of the prompt positions' FLOPs saved.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from r1jax import sharding as shd
from r1jax.model import RowSpan, positions_from_mask
from r1jax.model.lora import split_trainable
from r1jax.rl.logprobs import model_head, token_logprobs
from r1jax.rl.losses import LossConfig, policy_loss
from r1jax.sampling.decode import shared_prompt_cache


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static shape/algorithm settings of the update step."""

    loss: LossConfig
    prompt_len: int  # P
    num_iterations: int = 1  # mu
    num_minibatches: int = 1
    grad_accum: int = 1
    logprob_chunk: int = 256
    group_size: int = 1  # G rows per prompt sharing one prompt forward pass (1: off)

    @property
    def on_policy(self) -> bool:
        """True when the ratio's denominator is the current policy itself."""
        return self.num_iterations == 1 and self.num_minibatches == 1


def completion_logprobs(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    tokens: jax.Array,
    input_mask: jax.Array,
    prompt_len: int,
    chunk: int = 256,
    entropy: bool = False,
    group_size: int = 1,
) -> tuple[jax.Array, jax.Array | None]:
    """Policy log-probs ``[R, N]`` of the completion tokens ``tokens[:, P:]`` (and entropy).

    Hidden state at position ``t`` predicts token ``t + 1``; logits are formed chunk by chunk
    (never ``[R, L, V]``). With ``group_size`` G > 1 each group of G rows shares one prompt
    forward pass (see the module docstring).
    """
    model = nnx.merge(graphdef, params)
    if group_size > 1:
        h = _shared_prompt_hidden(model, tokens, input_mask, prompt_len, group_size)
    else:
        hidden, _ = model(
            tokens,
            positions_from_mask(input_mask),
            RowSpan.from_mask(input_mask),
            return_hidden=True,
            max_position=tokens.shape[1],
        )
        h = hidden[:, prompt_len - 1 : -1]
    head = model_head(model)  # like the sampler's logits
    return token_logprobs(h, head, tokens[:, prompt_len:], chunk, entropy)


def check_rows_contiguous(input_mask: np.ndarray) -> None:
    """Raises ``ValueError`` naming the first row of ``input_mask [R, L]`` whose real tokens
    are not one contiguous run of slots (the update's attention takes each row as a
    :class:`~r1jax.model.RowSpan`)."""
    mask = np.asarray(input_mask, bool)
    count = mask.sum(axis=1)
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    bad = np.flatnonzero((count > 0) & (last - first + 1 != count))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"input_mask row {row} has {int(count[row])} real tokens spread over slots "
            f"{int(first[row])}..{int(last[row])}: each row must be one contiguous run "
            "(left-padded prompt, completion, right padding)"
        )


def _shared_prompt_hidden(
    model: nnx.Module,
    tokens: jax.Array,
    input_mask: jax.Array,
    prompt_len: int,
    group_size: int,
) -> jax.Array:
    """Final hidden states ``[R, N, D]`` at positions ``P-1 .. L-2`` (the ones predicting the
    completion tokens), computing each group's prompt once.

    ``tokens``/``input_mask [R, L]``; rows ``i*G .. i*G+G-1`` share prompt ``i``, left padded
    to ``P`` (so slot ``P-1`` is real).
    """
    p, g = prompt_len, group_size
    rows, length = tokens.shape
    if rows % g:
        raise ValueError(f"{rows} rows do not split into groups of {g}")
    h_prompt, cache = shared_prompt_cache(  # [R/G, P, D]; cache for R rows and L slots
        model, tokens[::g, :p], input_mask[::g, :p], g, length - p, model.cfg.dtype
    )
    h_completion, _ = model(
        tokens[:, p:],
        positions_from_mask(input_mask)[:, p:],
        RowSpan.from_mask(input_mask, offset=p),
        cache,
        p,
        return_hidden=True,
        max_position=length,
    )
    last_prompt = jnp.repeat(h_prompt[:, -1:], g, axis=0)  # [R, 1, D]
    return jnp.concatenate([last_prompt, h_completion[:, :-1]], axis=1)


def _token_shares(num_tokens: jax.Array) -> jax.Array:
    return num_tokens / jnp.maximum(jnp.sum(num_tokens), 1.0)


def part_weights(tokens: jax.Array, loss_type: str) -> jax.Array:
    """``[A]`` weights of the gradients (and loss) of ``A`` parts of a batch with ``tokens
    [A]`` loss tokens each, so that their weighted sum is the whole batch's: each part's share
    of the tokens for the ``token`` loss (one mean over all the tokens), ``1 / A`` for the
    losses whose normaliser counts rows (each part has as many)."""
    if loss_type == "token":
        return _token_shares(tokens)
    return jnp.full(tokens.shape, 1.0 / tokens.shape[0], jnp.float32)


def micro_batch_weights(loss_mask: jax.Array, loss_type: str) -> jax.Array:
    """:func:`part_weights` of the ``A`` micro-batches of one minibatch (``loss_mask [A,
    rows, N]``)."""
    a = loss_mask.shape[0]
    return part_weights(jnp.sum(loss_mask.reshape(a, -1).astype(jnp.float32), axis=1), loss_type)


LOSS_METRICS = ("loss", "pg_loss")  # reduced like the loss; the other means are over tokens


def _reduce_metrics(metrics: dict[str, jax.Array], loss_weights: jax.Array) -> dict:
    """Scalars of the whole batch from ``[A]`` metrics of ``A`` parts of it (micro-batches,
    or the optimizer updates of a step): the loss by ``loss_weights`` (see
    :func:`part_weights`), per-token means (entropy, clip fractions, KL, ratio mean)
    weighted by the parts' tokens, ``num_tokens`` summed and ``ratio_max`` the largest."""
    tokens = metrics["num_tokens"]
    shares = _token_shares(tokens)
    out = {
        k: jnp.sum(v * (loss_weights if k in LOSS_METRICS else shares))
        for k, v in metrics.items()
        if k not in ("num_tokens", "ratio_max")
    }
    return out | {"num_tokens": jnp.sum(tokens), "ratio_max": jnp.max(metrics["ratio_max"])}


def make_update_fn(
    graphdef: nnx.GraphDef, cfg: StepConfig, optimizer: optax.GradientTransformation
) -> Callable:
    """Returns ``update(params, opt_state, batch) -> (params, opt_state, metrics)`` (unjitted).

    ``params`` is the whole model state; only its trainable part
    (:func:`r1jax.model.lora.split_trainable`: the LoRA adapters when it has any, else every
    weight) gets gradients, and ``opt_state`` is the optimizer's state of that part."""

    def loss_fn(trainable, frozen, mb):
        params = nnx.merge_state(trainable, frozen)
        logp, ent = completion_logprobs(
            graphdef,
            params,
            mb["tokens"],
            mb["input_mask"],
            cfg.prompt_len,
            cfg.logprob_chunk,
            entropy=True,
            group_size=cfg.group_size,
        )
        old = mb.get("old_logp")
        loss, metrics = policy_loss(
            logp, old, mb.get("ref_logp"), mb["advantages"], mb["loss_mask"], cfg.loss
        )
        mask = mb["loss_mask"]
        mean = lambda x: jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)

        def k3(p: jax.Array, q: jax.Array) -> jax.Array:  # KL(q || p) estimate, samples of q
            d = jnp.where(mask > 0, p - q, 0.0)
            return mean(jnp.exp(d) - d - 1)

        metrics["entropy"] = mean(ent)
        if old is not None:  # how far the policy moved since sampling: KL(old || current),
            # k3 over the tokens, which the old policy sampled
            metrics["policy_drift_kl"] = k3(logp, old)
        sampled = mb.get("sampler_logp")
        if sampled is not None:  # the sampler's vs the trainer's log-probs of one policy
            trainer_logp = jax.lax.stop_gradient(logp if old is None else old)
            metrics["sampler_logp_abs_diff"] = mean(jnp.abs(trainer_logp - sampled))
            metrics["sampler_kl"] = k3(trainer_logp, sampled)
        metrics["loss"] = loss
        return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def minibatch_update(frozen, carry, mb):
        params, opt_state = carry  # the trainable part

        def micro(acc, xw):
            x, w = xw
            (_, metrics), grads = grad_fn(params, frozen, x)
            acc = jax.tree.map(lambda a, g: a + g * w, acc, grads)
            return acc, metrics

        zeros = jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), params)  # sums in fp32
        micro_batches = jax.tree.map(lambda x: shd.deal_rows(x, cfg.grad_accum, cfg.group_size), mb)
        weights = micro_batch_weights(micro_batches["loss_mask"], cfg.loss.loss_type)
        grads, metrics = jax.lax.scan(micro, zeros, (micro_batches, weights))
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        metrics = _reduce_metrics(metrics, weights)
        metrics["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), metrics

    def update(params, opt_state, batch):
        minibatches = jax.tree.map(
            lambda x: shd.deal_rows(x, cfg.num_minibatches, cfg.group_size), batch
        )
        trainable, frozen = split_trainable(params)
        all_metrics = []
        for _ in range(cfg.num_iterations):
            (trainable, opt_state), metrics = jax.lax.scan(
                functools.partial(minibatch_update, frozen), (trainable, opt_state), minibatches
            )
            all_metrics.append(metrics)
        params = nnx.merge_state(trainable, frozen)
        # [mu * minibatches] per optimizer update
        stacked = {k: jnp.concatenate([m[k] for m in all_metrics]) for k in all_metrics[0]}
        grad_norm = jnp.mean(stacked.pop("grad_norm"))
        metrics = _reduce_metrics(stacked, part_weights(stacked["num_tokens"], cfg.loss.loss_type))
        # the tokens of one optimizer update (the same in every pass)
        metrics["num_tokens"] = metrics["num_tokens"] / cfg.num_iterations / cfg.num_minibatches
        metrics["grad_norm"] = grad_norm
        return params, opt_state, metrics

    return update


def jit_update(
    update: Callable, param_shardings: Any, opt_shardings: Any, batch_shardings: Any
) -> Callable:
    """``jax.jit`` of ``update`` with explicit shardings and donated params/optimizer state."""
    return jax.jit(
        shd.on_mesh(update, shd.mesh_of(param_shardings)),
        in_shardings=(param_shardings, opt_shardings, batch_shardings),
        out_shardings=(param_shardings, opt_shardings, None),
        donate_argnums=(0, 1),
    )


def jit_logprobs(
    graphdef: nnx.GraphDef,
    cfg: StepConfig,
    param_shardings: Any,
    batch_sharding: Any,
    micro_batches: int = 1,
) -> Callable:
    """Jitted ``(params, tokens, input_mask) -> logp [R, N]`` computed in micro-batches."""

    def fn(params, tokens, input_mask):
        def one(x):
            return completion_logprobs(
                graphdef,
                params,
                x[0],
                x[1],
                cfg.prompt_len,
                cfg.logprob_chunk,
                group_size=cfg.group_size,
            )[0]

        deal = lambda x: shd.deal_rows(x, micro_batches, cfg.group_size)
        parts = jax.lax.map(one, (deal(tokens), deal(input_mask)))
        return shd.undeal_rows(parts, cfg.group_size)

    return jax.jit(
        shd.on_mesh(fn, shd.mesh_of(param_shardings)),
        in_shardings=(param_shardings, batch_sharding, batch_sharding),
        out_shardings=batch_sharding,
    )
