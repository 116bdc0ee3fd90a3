"""Optimizer construction shared by SFT, RL and reward-model training."""

from __future__ import annotations

import optax

TRAINABLE_COMPUTE = ("float32", "bfloat16")


def check_training_dtypes(dtype: str, param_dtype: str) -> None:
    """Refuses ``model.dtype`` / ``model.param_dtype`` settings that train without learning.

    Training keeps float32 weights (the master copy AdamW updates): an AdamW step is about the
    learning rate (R1: 3e-6), and bfloat16's 8-bit significand rounds ``w + step`` back to
    ``w`` for every weight above ~2**9 * step (1.5e-3 at lr 3e-6; measured: 3.7% of a tiny
    model's weights moved in 10 updates), while float16 moments underflow to inf/NaN updates.
    float16 compute needs loss scaling, which r1jax does not do (gradients underflow at long
    completions). Sampling, eval and export take any dtype.

    Raises:
      ConfigError: naming the field, its value and what to set instead.
    """
    from r1jax.config import ConfigError

    if param_dtype != "float32":
        raise ConfigError(
            f"config.model.param_dtype={param_dtype!r}: training needs float32 weights (AdamW's "
            "small steps round away in a 16-bit weight); for 16-bit matmuls set "
            "model.dtype='bfloat16' (export can still write bfloat16: --dtype=bfloat16)"
        )
    if dtype not in TRAINABLE_COMPUTE:
        raise ConfigError(
            f"config.model.dtype={dtype!r}: training in float16 needs loss scaling, which r1jax "
            "does not do (its gradients underflow); use 'bfloat16' (sampling and eval may use "
            "float16)"
        )


def make_schedule(
    lr: float, warmup_steps: int, total_steps: int, schedule: str = "constant"
) -> optax.Schedule:
    """Linear warmup to ``lr`` then constant or cosine decay (to 10% of ``lr``)."""
    warmup = optax.linear_schedule(0.0 if warmup_steps else lr, lr, max(warmup_steps, 1))
    if schedule == "constant":
        after = optax.constant_schedule(lr)
    elif schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, max(total_steps - warmup_steps, 1), alpha=0.1)
    else:
        raise ValueError(f"optim.schedule={schedule!r} is not one of constant, cosine")
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(
    lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.99,
    skip_nonfinite: bool = True,
) -> optax.GradientTransformation:
    """AdamW with warmup/schedule and global-norm clipping.

    With ``skip_nonfinite`` an update whose gradients contain NaN/Inf is skipped (parameters
    and moments unchanged); ``opt_state.notfinite_count`` counts consecutive skips so the
    host loop can stop with a clear message (see :func:`consecutive_nonfinite`).
    """
    chain = [
        optax.adamw(
            make_schedule(lr, warmup_steps, total_steps, schedule),
            b1=b1,
            b2=b2,
            weight_decay=weight_decay,
        )
    ]
    if grad_clip and grad_clip > 0:
        chain.insert(0, optax.clip_by_global_norm(grad_clip))
    tx = optax.chain(*chain)
    if skip_nonfinite:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=2**30)
    return tx


def consecutive_nonfinite(opt_state) -> int:
    """Consecutive skipped (non-finite) updates recorded in an ``apply_if_finite`` state."""
    return int(getattr(opt_state, "notfinite_count", 0))


def total_nonfinite(opt_state) -> int:
    return int(getattr(opt_state, "total_notfinite", 0))


def applied_lr(schedule: optax.Schedule, updates: int, opt_state) -> float:
    """The learning rate of the last update applied after ``updates`` attempted ones: skipped
    (non-finite) updates leave the schedule's count where it was, so it is not
    ``schedule(updates - 1)`` once any was skipped."""
    return float(schedule(max(updates - total_nonfinite(opt_state) - 1, 0)))


def init_opt_state(optimizer: optax.GradientTransformation, params, mesh):
    """Optimizer state laid out like ``params``; scalar counters replicated over ``mesh``."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    state = jax.jit(optimizer.init)(params)
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(x):
        # Counters come out of jit uncommitted to the mesh (SingleDeviceSharding on a 1-device
        # mesh); after one update they are mesh-replicated, which would recompile the step.
        ok = isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
        return x if ok else jax.device_put(x, replicated)

    return jax.tree.map(place, state)
