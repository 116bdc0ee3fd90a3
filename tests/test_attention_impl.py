"""``model.attention``: the ``jax.nn.dot_product_attention`` path (``"xla"`` here; ``"cudnn"``
on NVIDIA GPUs uses the same call) equals r1jax's einsum attention in every pass that uses
it: full forward, prefill into a cache, the GRPO forward (shared prompt or full rows, masks as
``RowSpan``) and its gradients, and the sampler built on top."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from r1jax import sharding as shd
from r1jax.config import ConfigError, base_config, model_config
from r1jax.model import causal_mask, create_model, get_preset, positions_from_mask
from r1jax.rl.step import completion_logprobs
from r1jax.sampler import Sampler, SamplingParams

CFG = get_preset("tiny").replace(num_heads=4, num_kv_heads=2, qkv_bias=True)
P, N, G = 6, 5, 2


def _models(mesh=None):
    """The same weights under both implementations."""
    return {
        impl: create_model(CFG.replace(attention=impl), mesh, seed=3) for impl in ("einsum", "xla")
    }


def _grouped_batch(rows=8, seed=0):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(2, CFG.vocab_size, (rows, P + N)).astype(np.int32)
    mask = np.ones((rows, P + N), bool)
    for i in range(0, rows, G):
        mask[i : i + G, : (i // G) % 3] = False  # left padding, equal within a group
        tokens[i : i + G, :P] = tokens[i, :P]
    for i in range(rows):
        mask[i, P + N - i % 3 :] = False  # right padding of completions
    return tokens, mask


def test_full_forward_logits_match():
    tokens, mask = _grouped_batch()
    pos, attn = positions_from_mask(jnp.asarray(mask)), causal_mask(jnp.asarray(mask))
    logits = {k: np.asarray(m(tokens, pos, attn)[0]) for k, m in _models().items()}
    np.testing.assert_allclose(logits["xla"][mask], logits["einsum"][mask], atol=1e-5)


@pytest.mark.parametrize("shape,group", [((1, 1, 1), G), ((2, 2, 2), G), ((2, 2, 2), 1)])
def test_update_logprobs_and_grads_match(shape, group):
    """Shared prompts (group G): prefill into the grown cache and the completions'
    multi-token pass over it; group 1: one full-row pass. Both take the rows as spans."""
    mesh = shd.make_mesh(shape, devices=jax.devices()[: int(np.prod(shape))])
    tokens, mask = _grouped_batch()
    weights = jnp.asarray(np.random.RandomState(1).randn(*tokens[:, P:].shape), jnp.float32)
    out = {}
    for impl, model in _models(mesh).items():
        graphdef, params = nnx.split(model)

        def f(p, graphdef=graphdef):
            lp, _ = completion_logprobs(graphdef, p, tokens, mask, P, 4, False, group)
            return jnp.sum(lp * weights * mask[:, P:]), lp

        out[impl] = jax.jit(jax.value_and_grad(f, has_aux=True))(params)
    (v_e, lp_e), g_e = out["einsum"]
    (v_x, lp_x), g_x = out["xla"]
    valid = mask[:, P:]
    np.testing.assert_allclose(np.asarray(lp_x)[valid], np.asarray(lp_e)[valid], atol=1e-5)
    np.testing.assert_allclose(float(v_x), float(v_e), rtol=1e-5)
    leaves = lambda g: [np.asarray(x) for x in jax.tree.leaves(g)]  # noqa: E731
    for a, b in zip(leaves(g_x), leaves(g_e), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_sampler_greedy_and_logprobs_match():
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14], [3]]
    outs = {}
    for impl, model in _models().items():
        sampler = Sampler(model, max_prompt_len=8, max_new_tokens=6, eos_ids=[])
        outs[impl] = sampler.generate(nnx.state(model), prompts, 2, SamplingParams(0))
    np.testing.assert_array_equal(outs["xla"].tokens, outs["einsum"].tokens)
    np.testing.assert_allclose(outs["xla"].logp_policy, outs["einsum"].logp_policy, atol=1e-5)


def test_bad_attention_settings_are_named():
    with pytest.raises(ValueError, match="model.attention='flash'"):
        CFG.replace(attention="flash")
    with pytest.raises(ValueError, match="cudnn.*bfloat16"):
        CFG.replace(attention="cudnn")  # fp32 compute
    c = base_config()
    c.model.attention = "flash"
    with pytest.raises(ConfigError, match="model.attention"):
        model_config(c)
    c.model.attention, c.model.dtype = "cudnn", "bfloat16"
    assert model_config(c).attention == "cudnn"
