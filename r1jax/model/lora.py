"""LoRA adapters: low-rank updates of the projection weights, trained while the base is frozen.

A target weight ``W [K1..Kc, N1..Nm]`` (``c`` input axes: 1 for q/k/v/gate/up/down, 2 for
``o [H, Dh, D]``) gets ``A [K1..Kc, r]`` and ``B [r, N1..Nm]``; the projection becomes
``x @ W + (alpha / r) * (x @ A) @ B``. ``A`` starts uniform in ``±1/sqrt(K1*..*Kc)`` (PEFT's
default), ``B`` at zero, so a fresh adapter leaves the model unchanged.

The adapters are :class:`LoRAParam` variables (an ``nnx.Param`` subclass) stored on the
attention / MLP modules as ``<name>_lora_a`` / ``<name>_lora_b``, next to their scale
``<name>_lora_scale`` (a frozen :class:`LoRAScale` scalar, so that checkpoints carry the alpha
their adapters were trained with). Training code splits a model's state with
:func:`split_trainable`: only the adapters get gradients and optimizer state when a model has
any, so RL keeps no optimizer moments for the base weights and the reference policy is the
same base weights with the reference adapters (no second copy of the model). The sampler and
``r1jax export`` fold the adapters into the weights (:func:`merge_lora`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from r1jax import sharding as shd
from r1jax.model.ops import dense

ATTENTION_TARGETS = ("q", "k", "v", "o")
MLP_TARGETS = ("gate", "up", "down")
TARGETS = ATTENTION_TARGETS + MLP_TARGETS
_CONTRACT = {"o": 2}  # input axes of each target weight (default 1)
LORA_MARK = "_lora_"  # in the names of the adapters' parameters: ``q_lora_a``, ``q_lora_b``


class LoRAParam(nnx.Param):
    """A LoRA adapter matrix: the only parameters a model with adapters trains."""


class LoRAScale(nnx.Param):
    """An adapter's ``alpha / rank`` (a float32 scalar): saved with the adapters, not trained."""


ADAPTER_STATE = nnx.Any(LoRAParam, LoRAScale)  # the filter of everything add_lora adds
# what a model with adapters changes of its base (what its checkpoints hold): the adapters,
# their scales and a reward model's ``score`` head
OWN_STATE = nnx.Any(LoRAParam, LoRAScale, nnx.PathContains("score"))


def project(module: nnx.Module, name: str, x: jax.Array) -> jax.Array:
    """``x @ W`` for the weight ``module.<name>`` (in ``x``'s dtype), plus its adapter's
    ``scale * (x @ A) @ B`` when the module has one. ``x [..., K1..Kc]`` -> ``[..., N1..Nm]``."""
    contract = _CONTRACT.get(name, 1)
    dt = x.dtype
    y = dense(x, getattr(module, name)[...].astype(dt), contract)
    adapter = adapter_of(module, name)
    if adapter is None:
        return y
    a, b, scale = adapter
    b = b[...] * scale[...]
    return y + dense(dense(x, a[...].astype(dt), contract), b.astype(dt))


def adapter_of(module: nnx.Module, name: str) -> tuple[nnx.Variable, ...] | None:
    """The ``(A, B, scale)`` variables of the adapter on ``module.<name>``, or None."""
    if not hasattr(module, f"{name}{LORA_MARK}a"):
        return None
    return tuple(getattr(module, f"{name}{LORA_MARK}{part}") for part in ("a", "b", "scale"))


def targets_of(block: nnx.Module, targets: Sequence[str] = TARGETS) -> list[tuple[nnx.Module, str]]:
    """``(module, name)`` of each of ``targets`` in a decoder block (its attention or MLP)."""
    return [(block.attn if t in ATTENTION_TARGETS else block.mlp, t) for t in targets]


def check_targets(targets: Sequence[str]) -> None:
    """Raises ``ValueError`` naming a target that is not one of :data:`TARGETS`, or none."""
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"lora.targets={list(targets)}: each must be one of {list(TARGETS)}")


def add_lora(
    model: nnx.Module,
    rank: int,
    alpha: float,
    targets: Sequence[str] = TARGETS,
    seed: int = 0,
    mesh: Mesh | None = None,
    rules: Mapping[str, Any] = shd.DEFAULT_RULES,
) -> None:
    """Adds fresh adapters of ``rank`` to the ``targets`` of every layer, in place.

    ``A`` is drawn on the host from ``seed`` (every process draws the same values) and placed
    with the sharding its logical axes give on ``mesh`` (the base weight's input axes, then
    the rank replicated); ``B`` is zero. Raises ``ValueError`` for a bad rank, alpha or target,
    or a model that already has adapters.
    """
    check_targets(targets)
    if rank <= 0 or alpha <= 0:
        raise ValueError(f"lora.rank={rank} and lora.alpha={alpha} must be positive")
    if has_lora(nnx.state(model)):
        raise ValueError("the model already has LoRA adapters")
    if mesh is None:
        mesh = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    rng = np.random.default_rng(seed)
    for block in model.layers:
        for module, name in targets_of(block, targets):
            w = getattr(module, name)
            contract = _CONTRACT.get(name, 1)
            axes = w.get_metadata().get("logical_axes") or (None,) * w.ndim
            k_shape, n_shape = w.shape[:contract], w.shape[contract:]
            bound = 1.0 / math.sqrt(math.prod(k_shape))
            a = rng.uniform(-bound, bound, (*k_shape, rank)).astype(w.dtype)
            b = np.zeros((rank, *n_shape), w.dtype)
            for suffix, value, names in (
                ("a", a, (*axes[:contract], None)),
                ("b", b, (None, *axes[contract:])),
            ):
                spec = shd.logical_to_spec(names, rules, mesh)
                sharding = jax.sharding.NamedSharding(mesh, spec)
                array = jax.make_array_from_callback(value.shape, sharding, lambda i, v=value: v[i])
                setattr(module, f"{name}{LORA_MARK}{suffix}", LoRAParam(array, logical_axes=names))
            scale = jax.device_put(jnp.float32(alpha / rank), jax.sharding.NamedSharding(mesh, P()))
            setattr(module, f"{name}{LORA_MARK}scale", LoRAScale(scale, logical_axes=()))


def merge_lora(model: nnx.Module, dtype: Any = None) -> None:
    """Folds every adapter into its weight (``W + scale * A @ B``, in float32, stored in
    ``dtype``, default the weight's) and removes the adapters, in place. A model without
    adapters is left as it is. Works inside ``jax.jit`` (the sampler merges there, into the
    compute dtype) and outside (export)."""
    for block in model.layers:
        for module, name in targets_of(block):
            adapter = adapter_of(module, name)
            if adapter is None:
                continue
            a, b, scale = adapter
            w = getattr(module, name)
            delta = dense(a[...].astype(jnp.float32), b[...].astype(jnp.float32), 1) * scale[...]
            merged = w[...].astype(jnp.float32) + delta  # [K1..Kc, N1..Nm]
            setattr(module, name, nnx.Param(merged.astype(dtype or w.dtype), **w.get_metadata()))
            for suffix in ("a", "b", "scale"):
                delattr(module, f"{name}{LORA_MARK}{suffix}")


def has_lora(state: nnx.State) -> bool:
    """True when ``state`` holds any :class:`LoRAParam`."""
    return any(isinstance(v, LoRAParam) for _, v in nnx.to_flat_state(state))


def trainable_filter(state: nnx.State) -> Any:
    """The NNX filter of what training updates in ``state``: the adapters (and a reward
    model's ``score`` head) when it has adapters, else every ``nnx.Param``."""
    if has_lora(state):
        return nnx.Any(LoRAParam, nnx.PathContains("score"))
    return nnx.Param


def split_trainable(state: nnx.State) -> tuple[nnx.State, nnx.State]:
    """``(trainable, frozen)`` parts of ``state`` (:func:`trainable_filter`); ``frozen`` is
    empty without adapters. ``nnx.merge_state(trainable, frozen)`` gives ``state`` back."""
    return nnx.split_state(state, trainable_filter(state), ...)


def split_base(state: nnx.State) -> tuple[nnx.State, nnx.State]:
    """``(own, base)`` of a model with adapters: ``own`` (:data:`OWN_STATE`) is what it
    trains or was trained with, ``base`` the frozen weights under the adapters."""
    return nnx.split_state(state, OWN_STATE, ...)


def summary(state: nnx.State) -> str | None:
    """One line naming how much of ``state`` trains: ``"LoRA adapters: 73,728 trainable
    parameters (0.12% of 61,440,000)"``; None without adapters."""
    if not has_lora(state):
        return None
    trainable, frozen = split_trainable(state)
    count = lambda s: sum(x.size for x in jax.tree.leaves(s))
    n, total = count(trainable), count(trainable) + count(frozen)
    return f"LoRA adapters: {n:,} trainable parameters ({100 * n / total:.2f}% of {total:,})"


def check_scales(before: nnx.State, after: nnx.State, where: str) -> None:
    """Raises ``ValueError`` when restored adapters (``after``) were trained with another
    ``alpha / rank`` than the config builds (``before``: the fresh model's scales), naming
    both: the same adapters under another scale are another model."""
    fresh = {p: float(v.get_value()) for p, v in nnx.to_flat_state(before)
             if isinstance(v, LoRAScale)}  # fmt: skip
    for path, var in nnx.to_flat_state(after):
        if path in fresh and not np.isclose(float(var.get_value()), fresh[path]):
            raise ValueError(
                f"{where}: its LoRA adapters were trained with alpha / rank = "
                f"{float(var.get_value()):g}, this config gives {fresh[path]:g} "
                f"({'/'.join(map(str, path))}): set lora.alpha as the run that wrote them"
            )
