"""Sharded models give the same logits as one device, and parameters really are sharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from r1jax import sharding as shd
from r1jax.model import causal_mask, create_model, get_preset, positions_from_mask
from r1jax.model.hf import load_hf_model

MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2)]


def _forward(model, ids, mask):
    graphdef, state = nnx.split(model)

    @jax.jit
    def fwd(state, ids, mask):
        m = nnx.merge(graphdef, state)
        return m(ids, positions_from_mask(mask), causal_mask(mask))[0]

    return np.asarray(fwd(state, ids, mask))


def _inputs(batch=8, length=10, vocab=256):
    rng = np.random.RandomState(1)
    mask = np.ones((batch, length), bool)
    for i in range(batch):
        mask[i, : i % 4] = False
    return jnp.asarray(rng.randint(0, vocab, (batch, length))), jnp.asarray(mask)


def test_eight_devices_available():
    assert jax.device_count() == 8


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_forward_matches_single_device(shape):
    cfg = get_preset("tiny").replace(num_heads=8, num_kv_heads=8, head_dim=8, intermediate_size=256)
    ids, mask = _inputs()
    ref = _forward(create_model(cfg, seed=3), ids, mask)
    mesh = shd.make_mesh(shape)
    model = create_model(cfg, mesh, seed=3)
    out = _forward(
        model,
        jax.device_put(ids, shd.batch_sharding(mesh)),
        jax.device_put(mask, shd.batch_sharding(mesh)),
    )
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("shape", MESHES)
def test_parameters_are_sharded(shape):
    cfg = get_preset("tiny").replace(num_heads=8, num_kv_heads=8, head_dim=8, intermediate_size=256)
    mesh = shd.make_mesh(shape)
    model = create_model(cfg, mesh)
    q = model.layers[0].attn.q[...]
    gate = model.layers[0].mlp.gate[...]
    data, fsdp, tensor = shape
    assert q.sharding.spec == P(
        "fsdp" if fsdp > 1 else None, "tensor" if tensor > 1 else None, None
    )
    # Each device holds 1/(fsdp*tensor) of the kernel: really split, not replicated.
    shard_shape = q.addressable_shards[0].data.shape
    assert np.prod(shard_shape) * fsdp * tensor == np.prod(q.shape)
    assert gate.addressable_shards[0].data.size * fsdp * tensor == gate.size


def test_hf_load_places_shards(hf_dirs):
    mesh = shd.make_mesh((2, 2, 2))
    model = load_hf_model(hf_dirs["qwen2"], mesh)
    emb = model.embed[...]
    assert emb.sharding.spec == P("tensor", "fsdp")
    assert emb.addressable_shards[0].data.shape == (96 // 2, 32 // 2)
    ids, mask = _inputs(vocab=96)
    ref = _forward(load_hf_model(hf_dirs["qwen2"]), ids, mask)
    np.testing.assert_allclose(_forward(model, ids, mask), ref, rtol=2e-5, atol=2e-5)


def test_impossible_mesh_errors():
    with pytest.raises(ValueError, match=r"mesh.shape=\(3, 1, 1\) has 3 devices but 8"):
        shd.make_mesh((3, 1, 1))
    with pytest.raises(ValueError, match="cannot be completed over 8 devices"):
        shd.make_mesh((3, -1, 1))
    cfg = get_preset("tiny")  # 4 heads, 2 kv heads
    with pytest.raises(ValueError, match=r"model.num_kv_heads=2.*not divisible.*tensor"):
        create_model(cfg, shd.make_mesh((1, 2, 4)))


def test_logical_rules_are_config():
    mesh = shd.make_mesh((1, 8, 1))
    rules = {**shd.DEFAULT_RULES, "embed": None, "vocab": "fsdp"}
    model = create_model(get_preset("tiny"), mesh, rules=rules)
    assert model.embed[...].sharding.spec == P("fsdp", None)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
def test_remat_policies_change_nothing(policy):
    """Rematerialisation trades memory for compute: same logits and same gradients."""
    cfg = get_preset("tiny")
    ids, mask = _inputs()

    def loss(model):
        logits = model(ids, positions_from_mask(mask), causal_mask(mask))[0]
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    value_and_grad = nnx.jit(nnx.value_and_grad(loss))
    l_base, g_base = value_and_grad(create_model(cfg, seed=2))
    l_remat, g_remat = value_and_grad(create_model(cfg.replace(remat=policy), seed=2))
    np.testing.assert_allclose(float(l_remat), float(l_base), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_remat), jax.tree.leaves(g_base), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
