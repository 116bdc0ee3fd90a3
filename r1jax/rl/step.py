"""The GRPO update: pure functions of (params, opt_state, rollout batch), jitted once.

A rollout batch holds R = prompts * G completions, each row ``prompt (P, left padded) +
completion (N, right padded)``:

- ``tokens [R, L]`` int32, ``L = P + N``
- ``input_mask [R, L]`` bool (real tokens)
- ``loss_mask [R, N]`` float32 (completion tokens that count in the loss)
- ``advantages [R]`` float32
- optional ``old_logp [R, N]`` (when the policy moves within one batch: mu > 1 or several
  minibatches) and ``ref_logp [R, N]`` (beta > 0), both computed on device by
  :func:`completion_logprobs` before the update.

One call runs ``num_iterations`` passes; each pass splits the batch into ``num_minibatches``
optimizer updates, each accumulating gradients over ``grad_accum`` micro-batches with
``lax.scan``. Rows are dealt to micro-batches round-robin, so every micro-batch keeps rows
from every data shard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from r1jax.model import causal_mask, positions_from_mask
from r1jax.rl.logprobs import token_logprobs
from r1jax.rl.losses import LossConfig, policy_loss


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static shape/algorithm settings of the update step."""

    loss: LossConfig
    prompt_len: int  # P
    num_iterations: int = 1  # mu
    num_minibatches: int = 1
    grad_accum: int = 1
    logprob_chunk: int = 256

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
) -> tuple[jax.Array, jax.Array | None]:
    """Policy log-probs ``[R, N]`` of the completion tokens ``tokens[:, P:]`` (and entropy).

    Hidden state at position ``t`` predicts token ``t + 1``; logits are formed chunk by chunk
    (never ``[R, L, V]``).
    """
    model = nnx.merge(graphdef, params)
    hidden, _ = model(
        tokens, positions_from_mask(input_mask), causal_mask(input_mask), return_hidden=True
    )
    h = hidden[:, prompt_len - 1 : -1]
    return token_logprobs(h, model.lm_head_weight(), tokens[:, prompt_len:], chunk, entropy)


def _deal(x: jax.Array, groups: int) -> jax.Array:
    """``[R, ...] -> [groups, R // groups, ...]`` dealing rows round-robin."""
    r = x.shape[0]
    return jnp.swapaxes(x.reshape(r // groups, groups, *x.shape[1:]), 0, 1)


def make_update_fn(
    graphdef: nnx.GraphDef, cfg: StepConfig, optimizer: optax.GradientTransformation
) -> Callable:
    """Returns ``update(params, opt_state, batch) -> (params, opt_state, metrics)`` (unjitted)."""

    def loss_fn(params, mb):
        logp, ent = completion_logprobs(
            graphdef,
            params,
            mb["tokens"],
            mb["input_mask"],
            cfg.prompt_len,
            cfg.logprob_chunk,
            entropy=True,
        )
        old = mb.get("old_logp")
        loss, metrics = policy_loss(
            logp, old, mb.get("ref_logp"), mb["advantages"], mb["loss_mask"], cfg.loss
        )
        mask = mb["loss_mask"]
        metrics["entropy"] = jnp.sum(ent * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        if old is not None:  # how far the policy moved since sampling (k3, mean over tokens)
            d = jnp.where(mask > 0, old - logp, 0.0)
            metrics["policy_drift_kl"] = jnp.sum((jnp.exp(d) - d - 1) * mask) / jnp.maximum(
                jnp.sum(mask), 1.0
            )
        metrics["loss"] = loss
        return loss, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def minibatch_update(carry, mb):
        params, opt_state = carry

        def micro(acc, x):
            (_, metrics), grads = grad_fn(params, x)
            acc = jax.tree.map(lambda a, g: a + g / cfg.grad_accum, acc, grads)
            return acc, metrics

        zeros = jax.tree.map(jnp.zeros_like, params)
        micro_batches = jax.tree.map(lambda x: _deal(x, cfg.grad_accum), mb)
        grads, metrics = jax.lax.scan(micro, zeros, micro_batches)
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), metrics

    def update(params, opt_state, batch):
        minibatches = jax.tree.map(lambda x: _deal(x, cfg.num_minibatches), batch)
        all_metrics = []
        for _ in range(cfg.num_iterations):
            (params, opt_state), metrics = jax.lax.scan(
                minibatch_update, (params, opt_state), minibatches
            )
            all_metrics.append(metrics)
        metrics = jax.tree.map(lambda *m: jnp.mean(jnp.stack(m)), *all_metrics)
        return params, opt_state, metrics

    return update


def jit_update(
    update: Callable, param_shardings: Any, opt_shardings: Any, batch_shardings: Any
) -> Callable:
    """``jax.jit`` of ``update`` with explicit shardings and donated params/optimizer state."""
    return jax.jit(
        update,
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
                graphdef, params, x[0], x[1], cfg.prompt_len, cfg.logprob_chunk
            )[0]

        parts = jax.lax.map(one, (_deal(tokens, micro_batches), _deal(input_mask, micro_batches)))
        r = tokens.shape[0]
        return jnp.swapaxes(parts, 0, 1).reshape(r, -1)  # undo the round-robin deal

    return jax.jit(
        fn,
        in_shardings=(param_shardings, batch_sharding, batch_sharding),
        out_shardings=batch_sharding,
    )
