"""Weight fingerprints (r1jax.fingerprint): the same on any mesh, and any changed element,
order or dtype changes them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.fingerprint import fingerprints

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(64, 48)), jnp.bfloat16)
Y = jnp.asarray(RNG.normal(size=(16, 8, 4)), jnp.float32)


def test_the_same_weights_give_the_same_fingerprint_on_any_mesh():
    one = fingerprints({"x": X, "y": Y})
    for shape, x_spec, y_spec in [((8,), P("a"), P(None, "a")), ((4, 2), P("a", "b"),
                                  P("b", "a", None)), ((2, 4), P(None, "b"), P("a"))]:  # fmt: skip
        mesh = jax.make_mesh(shape, ("a", "b")[: len(shape)])
        sharded = {"x": jax.device_put(X, NamedSharding(mesh, x_spec)),
                   "y": jax.device_put(Y, NamedSharding(mesh, y_spec))}  # fmt: skip
        assert fingerprints(sharded) == one, shape
    assert fingerprints({}) == {}
    assert all(len(v) == 17 for v in one.values())  # "xxxxxxxx-xxxxxxxx"


def test_any_changed_element_order_or_dtype_changes_it():
    base = fingerprints({"x": X})["x"]
    for i, j in [(0, 0), (63, 47), (17, 5)]:
        bumped = X.at[i, j].set(jnp.nextafter(X[i, j], jnp.inf))  # the last bit of one element
        assert fingerprints({"x": bumped})["x"] != base, (i, j)
    swapped = X.at[0, 0].set(X[0, 1]).at[0, 1].set(X[0, 0])
    assert not np.array_equal(np.asarray(swapped), np.asarray(X))
    assert fingerprints({"x": swapped})["x"] != base  # same values, other places
    assert fingerprints({"x": X.astype(jnp.float32)})["x"] != base
    # (not the shape: the same elements in another shape hash the same; checkpoints compare
    # shapes by themselves)
    assert fingerprints({"x": X.reshape(48, 64)})["x"] == base
    halves = [fingerprints({"x": X.at[:, 24:].set(0)})["x"], fingerprints({"x": X.at[:, :24]
              .set(0)})["x"]]  # fmt: skip
    assert len({base, *halves}) == 3
