"""``model.attention``: the ``jax.nn.dot_product_attention`` path (``"xla"`` here; ``"cudnn"``
on NVIDIA GPUs uses the same call) and the TPU splash kernel (``"splash"``, in Pallas
interpret mode on CPU) equal r1jax's einsum attention in every pass that uses them: full
forward, packed rows (``Segments``), prefill into a cache, the GRPO forward (shared prompt or
full rows, masks as ``RowSpan``) and its gradients, the SFT loss and its gradients on a mesh,
and the sampler built on top."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from r1jax import sharding as shd
from r1jax.config import ConfigError, base_config, model_config
from r1jax.model import (
    RowSpan,
    Segments,
    causal_mask,
    create_model,
    get_preset,
    positions_from_mask,
)
from r1jax.rl.step import completion_logprobs
from r1jax.sampler import Sampler, SamplingParams
from r1jax.sft import DEVICE_KEYS, make_sft_batch, sft_loss
from r1jax.tokenizer import CharTokenizer

CFG = get_preset("tiny").replace(num_heads=4, num_kv_heads=2, qkv_bias=True)
# sliding windows of 4 keys (rows of 11 slots), a query_pre_attn_scalar other than head_dim;
# Gemma 2 soft-caps the scores (splash only: jax.nn.dot_product_attention cannot)
GEMMA2 = get_preset("tiny-gemma2").replace(attn_softcap=2.0)
GEMMA3 = get_preset("tiny-gemma3")
P, N, G = 6, 5, 2
IMPLS = ("xla", "splash")
WITH_GEMMA = [("xla", CFG), ("splash", CFG), ("xla", GEMMA3), ("splash", GEMMA2)]
IDS = ["xla", "splash", "xla-gemma3", "splash-gemma2"]


def _models(impl, mesh=None, cfg=CFG):
    """The same weights under einsum attention and ``impl``."""
    return {name: create_model(cfg.replace(attention=name), mesh, seed=3)
            for name in ("einsum", impl)}  # fmt: skip


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


@nnx.jit
def _logits(model, tokens, pos, attn):
    return model(tokens, pos, attn)[0]


@pytest.mark.parametrize("impl,cfg", WITH_GEMMA, ids=IDS)
def test_full_forward_logits_match(impl, cfg):
    tokens, mask = _grouped_batch()
    pos = positions_from_mask(jnp.asarray(mask))
    # splash takes masks as spans or segments; the library call also takes dense masks
    spans = [RowSpan.from_mask(jnp.asarray(mask))] + [causal_mask(mask)] * (impl != "splash")
    models = _models(impl, cfg=cfg)
    for attn in spans:
        logits = {k: np.asarray(_logits(m, tokens, pos, attn)) for k, m in models.items()}
        np.testing.assert_allclose(logits[impl][mask], logits["einsum"][mask], atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_rows_match(impl):
    """Two or three examples per row, positions restarting at each: ``Segments`` masks."""
    ids = np.array([[1, 1, 1, 2, 2, 2, 2, 0, 0], [1, 1, 2, 2, 2, 3, 3, 3, 3]], np.int32)
    tokens = np.random.RandomState(2).randint(2, CFG.vocab_size, ids.shape).astype(np.int32)
    pos = np.zeros_like(ids)
    for r in range(len(ids)):
        for s in set(ids[r]) - {0}:
            at = ids[r] == s
            pos[r, at] = np.arange(at.sum())
    logits = {k: np.asarray(_logits(m, tokens, pos, Segments(jnp.asarray(ids))))
              for k, m in _models(impl).items()}  # fmt: skip
    real = ids > 0
    np.testing.assert_allclose(logits[impl][real], logits["einsum"][real], atol=1e-5)
    # the segments really separate the examples: one mask over whole rows gives other logits
    whole = np.asarray(_logits(_models(impl)["einsum"], tokens, pos, causal_mask(real)))
    assert np.abs(whole[real] - logits["einsum"][real]).max() > 1e-3


@pytest.mark.parametrize(
    "impl,shape,group,cfg",
    [("xla", (1, 1, 1), G, CFG), ("xla", (2, 2, 2), G, CFG), ("xla", (2, 2, 2), 1, CFG),
     ("splash", (2, 2, 2), G, CFG), ("splash", (2, 2, 2), 1, CFG),
     ("xla", (2, 2, 2), G, GEMMA3), ("splash", (2, 2, 2), G, GEMMA2)],  # one device: above
    ids=["xla-1", "xla-G", "xla-rows", "splash-G", "splash-rows", "xla-gemma3",
         "splash-gemma2"],
)  # fmt: skip
def test_update_logprobs_and_grads_match(impl, shape, group, cfg):
    """Shared prompts (group G): prefill into the grown cache and the completions'
    multi-token pass over it; group 1: one full-row pass. Both take the rows as spans."""
    mesh = shd.make_mesh(shape, devices=jax.devices()[: int(np.prod(shape))])
    tokens, mask = _grouped_batch()
    weights = jnp.asarray(np.random.RandomState(1).randn(*tokens[:, P:].shape), jnp.float32)
    out = {}
    for name, model in _models(impl, mesh, cfg).items():
        graphdef, params = nnx.split(model)

        def f(p, graphdef=graphdef):
            lp, _ = completion_logprobs(graphdef, p, tokens, mask, P, 4, False, group)
            return jnp.sum(lp * weights * mask[:, P:]), lp

        out[name] = jax.jit(shd.on_mesh(jax.value_and_grad(f, has_aux=True), mesh))(params)
    (v_e, lp_e), g_e = out["einsum"]
    (v_x, lp_x), g_x = out[impl]
    valid = mask[:, P:]
    np.testing.assert_allclose(np.asarray(lp_x)[valid], np.asarray(lp_e)[valid], atol=1e-5)
    np.testing.assert_allclose(float(v_x), float(v_e), rtol=1e-5)
    leaves = lambda g: [np.asarray(x) for x in jax.tree.leaves(g)]  # noqa: E731
    for a, b in zip(leaves(g_x), leaves(g_e), strict=True):
        # (Gemma's scaled embeddings and 1 + w norms: float32 noise up to ~3e-6 in gradients
        # of magnitude ~0.05; the same kernels without a window or cap differ by > 1e-3)
        atol = 1e-6 if cfg is CFG else 1e-4 * np.abs(b).max()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def test_sft_loss_and_grads_match_on_a_mesh():
    """Packed SFT rows through the splash kernel under ``shard_map`` (rows over data x fsdp,
    heads over tensor)."""
    tok = CharTokenizer("abcdefgh")
    mesh = shd.make_mesh((2, 2, 2))
    ex = [("ab", "cdefg"), ("h", "ab"), ("abc", "d"), ("e", "fghab")] * 4
    batch = make_sft_batch(tok, ex, max_len=16, pack=True, num_rows=8)
    batch = {k: jax.device_put(batch[k], shd.batch_sharding(mesh)) for k in DEVICE_KEYS}
    out = {}
    for name in ("einsum", "splash"):
        cfg = CFG.replace(attention=name)  # the char ids are within its vocabulary
        graphdef, state = nnx.split(create_model(cfg, mesh, seed=4))
        fn = lambda s, b, graphdef=graphdef: sft_loss(graphdef, s, b, 8)  # noqa: E731
        out[name] = jax.jit(shd.on_mesh(jax.value_and_grad(fn, has_aux=True), mesh))(state, batch)
    (loss_e, m_e), g_e = out["einsum"]
    (loss_s, m_s), g_s = out["splash"]
    np.testing.assert_allclose(float(loss_s), float(loss_e), rtol=1e-5)
    np.testing.assert_allclose(float(m_s["accuracy"]), float(m_e["accuracy"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_e), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl,cfg", WITH_GEMMA, ids=IDS)
def test_sampler_greedy_and_logprobs_match(impl, cfg):
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14], [3]]
    outs = {}
    for name, model in _models(impl, cfg=cfg).items():
        sampler = Sampler(model, max_prompt_len=8, max_new_tokens=6, eos_ids=[])
        outs[name] = sampler.generate(nnx.state(model), prompts, 2, SamplingParams(0))
    np.testing.assert_array_equal(outs[impl].tokens, outs["einsum"].tokens)
    np.testing.assert_allclose(outs[impl].logp_policy, outs["einsum"].logp_policy, atol=1e-5)


def test_splash_names_what_it_cannot_take():
    model = create_model(CFG.replace(attention="splash"), seed=0)
    tokens = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="'splash' takes a RowSpan or Segments mask"):
        model(tokens, jnp.arange(4)[None], causal_mask(jnp.ones((1, 4), bool)))


def test_bad_attention_settings_are_named():
    with pytest.raises(ValueError, match="model.attention='flash'"):
        CFG.replace(attention="flash")
    with pytest.raises(ValueError, match="cudnn.*bfloat16"):
        CFG.replace(attention="cudnn")  # fp32 compute
    with pytest.raises(ValueError, match="'xla' cannot soft-cap attention scores"):
        GEMMA2.replace(attention="xla")
    c = base_config()
    c.model.attention = "flash"
    with pytest.raises(ConfigError, match="model.attention"):
        model_config(c)
    c.model.attention, c.model.dtype = "cudnn", "bfloat16"
    assert model_config(c).attention == "cudnn"
