"""Device mesh construction and logical-axis sharding rules.

Parameters carry logical axis names (``vocab``, ``embed``, ``heads``, ``kv_heads``,
``head_dim``, ``mlp``, ``norm``); a rules table maps each name onto zero or more mesh axes
(``data``, ``fsdp``, ``tensor``, optionally ``replica`` for multi-slice DCN). Changing
parallelism is a config change: edit the mesh shape or the rules, never the model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (str), tuple of mesh axes, or None (replicated).
DEFAULT_RULES: dict[str, Any] = {
    "batch": BATCH_AXES,
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "norm": None,
    "length": None,
}


def make_mesh(
    shape: Sequence[int] = (-1, 1, 1),
    axis_names: Sequence[str] = MESH_AXES,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Builds a mesh over all (or the given) devices; one ``-1`` entry absorbs the rest.

    Axis types are ``Auto`` on purpose: shardings are given explicitly at ``jax.jit``
    boundaries and XLA's partitioner propagates them inside.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = list(shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"mesh.shape={tuple(shape)} needs one entry per axis {tuple(axis_names)}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh.shape={tuple(shape)} may contain at most one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if known <= 0 or len(devices) % known:
            raise ValueError(
                f"mesh.shape={tuple(shape)} cannot be completed over {len(devices)} devices"
            )
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"mesh.shape={tuple(shape)} has {int(np.prod(shape))} devices but "
            f"{len(devices)} are available"
        )
    axis_types = (jax.sharding.AxisType.Auto,) * len(axis_names)
    if devices == list(jax.devices()):
        return jax.make_mesh(tuple(shape), tuple(axis_names), axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(shape), tuple(axis_names), axis_types=axis_types)


def logical_to_spec(
    axes: Sequence[str | None], rules: Mapping[str, Any] = DEFAULT_RULES, mesh: Mesh | None = None
) -> P:
    """Maps logical axis names to a ``PartitionSpec`` (mesh axes of size 1 are dropped)."""
    out = []
    used: set[str] = set()
    for name in axes:
        target = rules.get(name) if name is not None else None
        if name is not None and name not in rules:
            raise KeyError(f"logical axis {name!r} has no sharding rule; rules: {sorted(rules)}")
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        if mesh is not None:
            targets = tuple(t for t in targets if mesh.shape.get(t, 1) > 1)
        targets = tuple(t for t in targets if t not in used)  # a mesh axis shards one dim
        used.update(targets)
        out.append(targets[0] if len(targets) == 1 else (targets or None))
    return P(*out)


def _logical_axes(var: nnx.Variable) -> tuple[str | None, ...]:
    meta = var.get_metadata()
    if "logical_axes" not in meta:
        raise ValueError(f"parameter of shape {var.shape} has no logical_axes metadata")
    return tuple(meta["logical_axes"])


def state_specs(
    state: nnx.State, rules: Mapping[str, Any] = DEFAULT_RULES, mesh: Mesh | None = None
) -> Any:
    """A pytree of ``PartitionSpec`` matching ``state`` (an ``nnx.State`` of Params)."""
    return jax.tree.map(
        lambda v: logical_to_spec(_logical_axes(v), rules, mesh),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def state_shardings(state: nnx.State, mesh: Mesh, rules: Mapping[str, Any] = DEFAULT_RULES) -> Any:
    """A pytree of ``NamedSharding`` matching ``state``."""
    specs = state_specs(state, rules, mesh)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_spec(mesh: Mesh | jax.sharding.AbstractMesh, ndim: int = 2) -> P:
    """Spec of a ``[B, ...]`` activation/batch array: batch over ``data`` and ``fsdp``."""
    axes = tuple(a for a in BATCH_AXES if mesh.shape.get(a, 1) > 1)
    lead = axes[0] if len(axes) == 1 else (axes or None)
    return P(lead, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a ``[B, ...]`` activation/batch array: batch over ``data`` and ``fsdp``."""
    return NamedSharding(mesh, batch_spec(mesh, ndim))


def on_mesh(fn: Callable, mesh: Mesh) -> Callable:
    """``fn`` traced with ``mesh`` as the abstract mesh in context, so that model code can pin
    activations with :func:`constrain_batch` (wrap the function given to ``jax.jit``)."""

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args, **kwargs)

    inner = getattr(fn, "func", fn)  # functools.partial: name the program after its function
    traced.__name__ = getattr(inner, "__name__", "traced")  # jit_<name> in profiles and dumps
    return traced


def constrain_batch(x: jax.Array) -> jax.Array:
    """Pins ``x [B, ...]`` to batch sharding (``data`` x ``fsdp``) of the mesh in context.

    A no-op outside :func:`on_mesh` or when ``B`` does not split evenly (a shared-prompt pass
    may run fewer rows than there are batch shards). Used on the residual stream after the
    embedding lookup: without it GSPMD carries the table's ``embed`` sharding (over fsdp) into
    ``[B, T, D]`` and can only convert it by replicating the whole tensor.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or (shards := batch_divisor(mesh)) == 1 or x.shape[0] % shards:
        return x
    return jax.lax.with_sharding_constraint(x, batch_spec(mesh, x.ndim))


def gather_rows_of(table: jax.Array) -> jax.Array:
    """An embedding table ``[V, D]`` about to be indexed, with its ``D`` dim gathered over the
    mesh in context (as FSDP gathers every weight where it is used); ``V`` stays split over
    ``tensor`` (``DEFAULT_RULES``' vocab axis) when it divides. Lookups from a ``D``-sharded
    table give ``[B, T, D]`` activations sharded on ``D`` over the same axis as the batch,
    which GSPMD can only fix by replicating them. A no-op outside :func:`on_mesh`."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return table
    tensor = dict(mesh.shape).get("tensor", 1)
    vocab = "tensor" if tensor > 1 and table.shape[0] % tensor == 0 else None
    return jax.lax.with_sharding_constraint(table, P(vocab, None))


def mesh_of(shardings: Any) -> Mesh:
    """The mesh of the first ``NamedSharding`` in a pytree of shardings."""
    return next(s.mesh for s in jax.tree.leaves(shardings) if isinstance(s, NamedSharding))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh | jax.sharding.AbstractMesh) -> int:
    """Number of shards along the batch dimension (data * fsdp)."""
    return int(np.prod([mesh.shape.get(a, 1) for a in BATCH_AXES]))


def check_divisible(shape: Sequence[int], spec: P, mesh: Mesh, what: str) -> None:
    """Raises ``ValueError`` naming ``what`` when a dimension does not split evenly."""
    for dim, axes in zip(shape, spec, strict=False):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        n = int(np.prod([mesh.shape[a] for a in axes]))
        if dim % n:
            raise ValueError(
                f"{what}: dimension {dim} is not divisible by mesh axes {axes} "
                f"of total size {n} (mesh {dict(mesh.shape)})"
            )


# ---------------------------------------------------------------------- multi-process batches
#
# With several JAX processes, each process holds the rows of a batch that live on its own
# devices. Host data moves in and out of global arrays through these helpers; with one
# process they are plain ``device_put`` / ``device_get``.


def _batch_shard_ids(mesh: Mesh) -> np.ndarray:
    """For every device of ``mesh`` (in ``mesh.devices`` order), the index of the block of the
    batch dimension it holds (``batch_sharding`` splits rows over ``data`` x ``fsdp``)."""
    shape = [mesh.shape.get(a, 1) for a in BATCH_AXES]
    grids = np.indices(mesh.devices.shape)
    names = list(mesh.axis_names)
    coords = [grids[names.index(a)] if a in names else np.zeros_like(grids[0]) for a in BATCH_AXES]
    return np.ravel_multi_index(coords, shape)


def process_batch_shard(mesh: Mesh) -> tuple[int, int]:
    """``(index, count)`` of this process's share of a batch sharded by :func:`batch_sharding`.

    Every process must own the same number of batch blocks and no block may be held by two
    processes (the data*fsdp axes must span the processes); processes are numbered by the
    first batch block they hold, so process ``index`` owns global rows
    ``[index * B / count, (index + 1) * B / count)`` when its blocks are contiguous (as with
    :func:`make_mesh`). Feed process ``index`` of ``count`` that share of every batch.

    Raises:
      ValueError: when the mesh's batch axes do not split evenly over the processes.
    """
    procs = np.vectorize(lambda d: d.process_index)(mesh.devices)
    if len(np.unique(procs)) == 1:
        return 0, 1
    blocks = _batch_shard_ids(mesh)
    owned: dict[int, set[int]] = {}
    for p, b in zip(procs.reshape(-1), blocks.reshape(-1), strict=True):
        owned.setdefault(int(p), set()).add(int(b))
    sizes = {len(s) for s in owned.values()}
    shared = sum(len(s) for s in owned.values()) != batch_divisor(mesh)
    if len(sizes) != 1 or shared:
        raise ValueError(
            f"mesh {dict(mesh.shape)} over {len(owned)} processes: every process must hold its "
            f"own, equally many blocks of the batch (the data*fsdp axes, {batch_divisor(mesh)} "
            f"blocks, must be split over the processes, not replicated across them); blocks "
            f"per process: { {p: sorted(s) for p, s in sorted(owned.items())} }"
        )
    order = sorted(owned, key=lambda p: min(owned[p]))
    return order.index(jax.process_index()), len(order)


def spans_processes(mesh: Mesh | None) -> bool:
    """True when ``mesh`` has devices of more than one JAX process."""
    if mesh is None or jax.process_count() == 1:
        return False
    return len({d.process_index for d in mesh.devices.flat}) > 1


def host_to_global(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global ``[B, ...]`` array from this process's rows ``local [B / count, ...]``.

    With one process this is ``jax.device_put(local, sharding)``; otherwise each process passes
    its own rows (:func:`process_batch_shard`) and gets one global array
    (``jax.make_array_from_process_local_data``).
    """
    if not spans_processes(sharding.mesh):
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))


def global_from_full(full: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds in full (same values)."""
    if not spans_processes(sharding.mesh):
        return jax.device_put(full, sharding)
    full = np.asarray(full)
    return jax.make_array_from_callback(full.shape, sharding, lambda index: full[index])


def global_to_host(array: jax.Array) -> np.ndarray:
    """The rows of a ``[B, ...]`` array that this process holds (all of them with one process).

    Inverse of :func:`host_to_global` for arrays sharded along the first axis only: the
    process's distinct row blocks, in global order. Fully replicated arrays come back whole.
    """
    if array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(jax.device_get(array))
    blocks: dict[int, Any] = {}
    for shard in array.addressable_shards:
        rows = shard.index[0] if shard.index else slice(None)
        blocks.setdefault(rows.start or 0, shard.data)
    return np.concatenate([np.asarray(blocks[k]) for k in sorted(blocks)])


def gather_to_host(array: jax.Array) -> np.ndarray:
    """The whole of a global array on this host. A collective when the array spans
    processes (every process must call it, in the same order); a copy otherwise (NumPy
    arrays pass through)."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(jax.device_get(array))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def deal_rows(x: jax.Array, parts: int, block: int = 1) -> jax.Array:
    """``[R, ...] -> [parts, R // parts, ...]``, dealing blocks of ``block`` rows round-robin
    (block ``b`` goes to part ``b % parts``; a block never splits).

    With the rows sharded over devices and each device's share divisible by ``block * parts``,
    every part keeps the same layout: splitting into micro-batches moves no data."""
    r = x.shape[0]
    x = x.reshape(r // (block * parts), parts, block, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1).reshape(parts, r // parts, *x.shape[3:])


def undeal_rows(x: jax.Array, block: int = 1) -> jax.Array:
    """Inverse of :func:`deal_rows`: ``[parts, R // parts, ...] -> [R, ...]``."""
    parts, per = x.shape[:2]
    x = x.reshape(parts, per // block, block, *x.shape[2:])
    return jnp.swapaxes(x, 0, 1).reshape(parts * per, *x.shape[3:])
