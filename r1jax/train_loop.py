"""The jitted step and the resumable host loop shared by the supervised stages: SFT (cold
start, distillation, rejection sampling) and reward-model training.

A stage supplies a loss ``loss_fn(graphdef, state, batch) -> (loss, metrics)`` over a dict of
``[B, L]`` arrays and a batch source ``batches(first_step) -> iterator of NumPy dicts``; this
module compiles one ``jax.jit`` step with explicit shardings and donated state, and runs the
loop: progress bar, windowed metrics, Orbax checkpoints every N steps / at the end / on
Ctrl-C, and resumption on the same trajectory (the data position is the step).

Multi-process (a mesh over several JAX processes): every process builds the same global
batches and places the rows of its own devices, so the run equals a one-process run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from tqdm.auto import tqdm

from r1jax import optim
from r1jax import sharding as shd
from r1jax.model import Transformer
from r1jax.model import check_model_fits_mesh as _check_model_fits_mesh
from r1jax.model.lora import split_trainable

LossFn = Callable[[nnx.GraphDef, nnx.State, Mapping[str, jax.Array]], tuple[jax.Array, dict]]
Batches = Callable[[int], Iterator[dict[str, np.ndarray]]]


def opt_state_shardings(
    tx: optax.GradientTransformation, state: nnx.State, mesh: Mesh, rules: Mapping[str, Any]
) -> Any:
    """Moments shard like their parameter (they keep its ``logical_axes``); scalars replicate."""

    def one(leaf: Any) -> NamedSharding:
        if isinstance(leaf, nnx.Variable):
            axes = tuple(leaf.get_metadata()["logical_axes"])
            return NamedSharding(mesh, shd.logical_to_spec(axes, rules, mesh))
        return shd.replicated(mesh)

    abstract = jax.eval_shape(tx.init, state)
    return jax.tree.map(one, abstract, is_leaf=lambda x: isinstance(x, nnx.Variable))


# Metrics that count things (summed over micro-batches); the others are means.
COUNT_METRICS = ("tokens",)


def make_train_step(
    loss_fn: LossFn,
    device_keys: Sequence[str],
    graphdef: nnx.GraphDef,
    state: nnx.State,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
    grad_accum: int = 1,
    weight_key: str | None = None,
) -> tuple[Callable, Callable[[nnx.State], Any], Any]:
    """The jitted step of ``loss_fn`` and its optimizer-state initialiser.

    Returns ``(train_step, init_opt_state, state_shardings)`` where
    ``train_step(state, opt_state, batch) -> (state, opt_state, metrics)`` donates ``state``
    and ``opt_state``; ``batch`` is a dict of the ``[B, L]`` arrays named by ``device_keys``
    (B divisible by the mesh's data * fsdp); metrics are ``loss_fn``'s replicated scalars plus
    ``grad_norm`` (before clipping). Only the trainable part of ``state``
    (:func:`r1jax.model.lora.split_trainable`: its LoRA adapters when it has any) is updated
    and has optimizer state.

    ``grad_accum`` > 1 runs the batch as that many micro-batches in a ``lax.scan`` (memory of
    one micro-batch's activations) and makes one optimizer update of their combined gradient.
    Row ``r`` goes to micro-batch ``r % grad_accum``, so each device keeps its own rows (B must
    be divisible by data * fsdp * grad_accum). ``loss_fn`` is a mean over some items; with
    ``weight_key`` (a metric counting them, e.g. ``"tokens"`` for a token-mean loss) the
    micro-batches are weighted by that count, so gradient and metrics equal one full-batch
    step's; without it they are weighted equally (right when every micro-batch holds as many
    items). Metrics in :data:`COUNT_METRICS` are summed.
    """
    check_positive(grad_accum=grad_accum)
    state_sh = shd.state_shardings(state, mesh, rules)
    opt_sh = opt_state_shardings(tx, split_trainable(state)[0], mesh, rules)
    batch_sh = {k: shd.batch_sharding(mesh, 2) for k in device_keys}
    grad_fn = jax.value_and_grad(
        lambda trainable, frozen, batch: loss_fn(
            graphdef, nnx.merge_state(trainable, frozen), batch
        ),
        has_aux=True,
    )

    def grads_and_metrics(trainable, frozen, batch):
        if grad_accum == 1:
            (_, metrics), grads = grad_fn(trainable, frozen, batch)
            return grads, metrics

        def micro(acc, mb):
            (_, metrics), grads = grad_fn(trainable, frozen, mb)
            w = metrics[weight_key] if weight_key else 1.0
            return jax.tree.map(lambda a, g: a + w * g, acc, grads), metrics

        parts = {k: shd.deal_rows(v, grad_accum) for k, v in batch.items()}
        zeros = jax.tree.map(lambda p: jnp.zeros_like(p, jnp.float32), trainable)  # sums in fp32
        total, per_micro = jax.lax.scan(micro, zeros, parts)
        weights = per_micro[weight_key] if weight_key else jnp.ones(grad_accum)
        denom = jnp.sum(weights)
        denom = jnp.where(denom > 0, denom, 1.0)
        metrics = {
            k: jnp.sum(v) if k in COUNT_METRICS else jnp.sum(weights * v) / denom
            for k, v in per_micro.items()
        }
        return jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), total, trainable), metrics

    def step(state, opt_state, batch):
        trainable, frozen = split_trainable(state)
        grads, metrics = grads_and_metrics(trainable, frozen, batch)
        metrics["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return nnx.merge_state(trainable, frozen), opt_state, metrics

    train_step = jax.jit(
        shd.on_mesh(step, mesh),
        in_shardings=(state_sh, opt_sh, batch_sh),
        out_shardings=(state_sh, opt_sh, shd.replicated(mesh)),
        donate_argnums=(0, 1),
    )
    init_opt_state = jax.jit(
        lambda state: tx.init(split_trainable(state)[0]),
        in_shardings=(state_sh,),
        out_shardings=opt_sh,
    )
    return train_step, init_opt_state, state_sh


def model_mesh(state: nnx.State) -> Mesh:
    """The mesh the parameters live on (a one-device mesh if they are not NamedSharded)."""
    sharding = getattr(jax.tree.leaves(state)[0], "sharding", None)
    if isinstance(sharding, NamedSharding):
        return sharding.mesh
    return shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def check_positive(**values: Any) -> None:
    """Raises ``ValueError`` naming the first value that is not a positive int."""
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")


def check_batch_fits(rows: int, mesh: Mesh, what: str, grad_accum: int = 1) -> None:
    """Raises ``ValueError`` unless ``rows`` splits over the mesh's data * fsdp devices, in
    ``grad_accum`` micro-batches."""
    divisor = shd.batch_divisor(mesh)
    if rows % (divisor * grad_accum):
        parts = f" x grad_accum={grad_accum}" if grad_accum > 1 else ""
        raise ValueError(
            f"{what} is not divisible by the mesh's data*fsdp={divisor}{parts} "
            f"(mesh {dict(mesh.shape)})"
        )


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. too many non-finite steps in a row)."""


MAX_BAD_STEPS = 5
"""A supervised loop stops when this many steps in a row had non-finite loss/gradients (their
updates are skipped), checked at each log entry."""


def run_train_loop(
    model: Transformer,
    loss_fn: LossFn,
    device_keys: Sequence[str],
    batches: Batches,
    *,
    steps: int,
    optimizer: Mapping[str, Any],
    mesh: Mesh | None = None,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
    log_every: int = 10,
    progress: bool = True,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 0,
    identity: Mapping[str, Any] | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
    before_checkpoint: Callable[[], None] | None = None,
    extra_log: Mapping[str, float] | None = None,
    name: str = "SFT",
    postfix: Sequence[str] = ("loss", "accuracy"),
    grad_accum: int = 1,
    weight_key: str | None = None,
    evaluate: Callable[[nnx.State, int], dict[str, float]] | None = None,
    eval_every: int = 0,
    save_base: bool = False,
) -> tuple[Transformer, list[dict[str, float]]]:
    """Trains ``model`` for ``steps`` steps of ``loss_fn`` on ``batches``; see the module doc.

    Args:
      device_keys: the arrays of each batch the step reads (all ``[B, L]``).
      batches: ``batches(first)`` yields the global batches of steps ``first``, ``first + 1``,
        ... (``first`` > 0 after a resume), each the same shapes (one compile).
      optimizer: keyword arguments of :func:`r1jax.optim.make_optimizer` besides the step
        count (``lr``, ``warmup_steps``, ``schedule``, ``weight_decay``, ``grad_clip``,
        ``b1``, ``b2``).
      checkpoint_dir / checkpoint_every / identity: resumable checkpoints
        (:class:`r1jax.sft_checkpoint.SFTCheckpoints`); ``identity`` records what fixes the
        data order, and a resume with another identity is refused. ``before_checkpoint``
        runs before each save, after ``on_log`` has had the step's entry (flush metrics there).
        ``save_base``: a model with LoRA adapters is saved whole (default: the adapters and
        a fingerprint of the base, which a resume takes from ``model``).
      extra_log: constant entries added to every log entry.
      name: the stage's name in messages; ``postfix``: metrics shown on the progress bar.
      grad_accum / weight_key: micro-batches per update and how they are weighted (see
        :func:`make_train_step`); the caller checks that the batch splits.
      evaluate / eval_every: held-out metrics of the parameters (``evaluate(state, step)``,
        e.g. ``{"eval_loss": ...}``) before the first step of a fresh run (passed to
        ``on_log`` with ``step`` 0), every ``eval_every`` steps (0: never in between) and
        after the last step, added to that step's log entry.

    Returns ``(model, history)``: one dict every ``log_every`` steps (and at the last) with the
    window means of the step metrics, plus ``step``, ``lr``, ``step_time_s`` (the first window
    includes compilation) and, when the metrics count ``tokens``, ``target_tokens_per_s``. Each
    is also passed to ``on_log``. The model is updated in place (its buffers are donated).
    Ctrl-C stops after the current step, saves (with a ``checkpoint_dir``) and raises
    ``KeyboardInterrupt``; SIGTERM does the same and raises its subclass
    :class:`r1jax.interrupt.Preempted`. A step with non-finite loss/gradients is skipped
    (``skipped_updates`` in the log entries counts them); when the last :data:`MAX_BAD_STEPS`
    or more steps all were, the loop raises :class:`TrainingError` at the log entry (their
    checkpoints, if any, hold the weights from before them: skipped updates change nothing).
    """
    from r1jax.interrupt import GracefulStop, Preempted
    from r1jax.sft_checkpoint import SFTCheckpoints

    check_positive(steps=steps, log_every=log_every)
    if eval_every < 0:
        raise ValueError(f"eval_every={eval_every} must be >= 0")
    graphdef, state = nnx.split(model, nnx.Param)  # fails if the model holds non-Param state
    mesh = mesh if mesh is not None else model_mesh(state)
    _check_model_fits_mesh(model.cfg, mesh, rules)
    opt = dict(optimizer)
    tx = optim.make_optimizer(
        opt["lr"], steps, opt.get("warmup_steps", 0), opt.get("schedule", "constant"),
        opt.get("weight_decay", 0.0), opt.get("grad_clip", 1.0), opt.get("b1", 0.9),
        opt.get("b2", 0.99),
    )  # fmt: skip
    lr_at = jax.jit(
        optim.make_schedule(
            opt["lr"], opt.get("warmup_steps", 0), steps, opt.get("schedule", "constant")
        )
    )
    lr_at(0)  # compile it before the loop: nothing compiles after the first step
    train_step, init_opt_state, state_sh = make_train_step(
        loss_fn, device_keys, graphdef, state, tx, mesh, rules, grad_accum, weight_key
    )
    batch_sh = shd.batch_sharding(mesh, 2)
    state = jax.device_put(state, state_sh)
    opt_state = init_opt_state(state)
    ckpt = None
    first = 0
    window: list[dict[str, Any]] = []  # the step metrics the next log entry averages
    if checkpoint_dir:
        ckpt = SFTCheckpoints(checkpoint_dir, checkpoint_every, dict(identity or {}), name=name,
                              before_save=before_checkpoint, save_base=save_base)  # fmt: skip
        restored = ckpt.restore(state, opt_state)
        if restored is not None:
            first, state, opt_state, window = restored
            if first >= steps and jax.process_index() == 0:
                print(f"{name}: {checkpoint_dir} is at step {first}, steps={steps}: nothing to "
                      "train (the model is that checkpoint's)")  # fmt: skip

    if evaluate is not None and first == 0 and on_log is not None:
        on_log({"step": 0, **evaluate(state, 0)})  # the starting point of the curves
    source = batches(first)
    history: list[dict[str, float]] = []
    untimed = len(window)  # of them, from before a resume: not timed here
    t0 = time.perf_counter()
    bar = tqdm(initial=first, total=steps, desc=name.lower().replace(" ", "_"),
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    stop = GracefulStop(
        f"finishing this {name} step, saving a checkpoint, then exiting"
        if ckpt
        else f"stopping {name} after this step (no checkpoint_dir: nothing is saved)"
    )
    step, interrupted = first, False
    try:
        with stop:
            while step < steps and not stop.anywhere(jax.process_count()):
                arrays = next(source)
                # every process builds the same global batch and places its devices' rows
                batch = {k: shd.global_from_full(arrays[k], batch_sh) for k in device_keys}
                state, opt_state, metrics = train_step(state, opt_state, batch)
                step += 1
                bar.update(1)
                window.append(metrics)
                at_eval = evaluate is not None and (
                    step == steps or (eval_every > 0 and step % eval_every == 0)
                )
                if at_eval or step == steps or step % log_every == 0:
                    timed, untimed = len(window) - untimed, 0
                    entry = _log_entry(window, step, t0, timed)
                    entry["lr"] = optim.applied_lr(lr_at, step, opt_state)
                    entry |= dict(extra_log or {})
                    entry["skipped_updates"] = float(optim.total_nonfinite(opt_state))
                    bad = optim.consecutive_nonfinite(opt_state)
                    if bad >= MAX_BAD_STEPS:
                        where = f"; the last good checkpoint is in {checkpoint_dir}" if ckpt else ""
                        raise TrainingError(
                            f"{name}: the last {bad} steps (to step {step}) had non-finite "
                            f"loss/gradients and were skipped{where}. Lower the learning rate "
                            "or check the data."
                        )
                    if at_eval:
                        entry |= evaluate(state, step)
                    history.append(entry)
                    if on_log is not None:
                        on_log(entry)
                    bar.set_postfix({k: f"{entry[k]:.4f}" for k in postfix if k in entry})
                    window, t0 = [], time.perf_counter()
                if ckpt is not None:  # after the log: the metrics cover what it saves
                    ckpt.after_step(step, state, opt_state, final=step == steps, window=window)
        # The loop ends early only when some process was interrupted: all save and stop.
        interrupted = step < steps
        if ckpt is not None and interrupted:
            ckpt.save(step, state, opt_state, window)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()  # waits for the saves in flight
    if interrupted:
        where = f"; saved step {step} to {checkpoint_dir}" if ckpt else ""
        if stop.preempted:
            resumes = "; the same command resumes" if ckpt else ""
            raise Preempted(f"{name} stopped by SIGTERM at step {step}{where}{resumes}")
        raise KeyboardInterrupt(f"{name} interrupted at step {step}{where}")
    nnx.update(model, state)
    return model, history


def _log_entry(window: list[dict[str, Any]], step: int, t0: float,
               timed: int) -> dict[str, float]:  # fmt: skip
    """Means of the window's step metrics, with ``step`` and the speed of its last ``timed``
    steps (those run since ``perf_counter()`` was ``t0``; earlier ones ran before a resume).
    The time is taken after the fetch: JAX dispatches steps ahead of the devices, and the
    fetch is where the host waits for them to finish."""
    fetched = jax.device_get(window)
    elapsed = time.perf_counter() - t0
    # in float64: the same means whether a metric came from the device or from a checkpoint
    entry = {k: float(np.mean(np.asarray([m[k] for m in fetched], np.float64))) for k in fetched[0]}
    entry |= {"step": step, "step_time_s": elapsed / timed}
    if "tokens" in fetched[0]:
        entry["target_tokens_per_s"] = float(sum(m["tokens"] for m in fetched[-timed:])) / elapsed
    return entry
