"""Gemma, Gemma 2 and Gemma 3 (text): logits and gradients against ``transformers`` on tiny
random checkpoints whose sliding windows (4 keys), soft-caps and rotary settings all change
the result, the sampler against recompute decoding, and export back to transformers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from hf_fixtures import make_hf_model
from test_model_hf import _batch, _hf_logits, _max_rel_err, _ours

from r1jax.model import get_preset
from r1jax.model.hf import CheckpointError, config_from_hf, load_hf_model, save_hf_model

GEMMAS = ["gemma", "gemma2", "gemma3"]


@pytest.fixture(scope="module")
def gemma_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma")
    out = {}
    for family in GEMMAS:
        model = make_hf_model(family, str(root / family))
        with torch.no_grad():  # Gemma norms scale by 1 + w: random w around 0, not 1
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.sub_(1.0)
        model.save_pretrained(str(root / family))
        out[family] = str(root / family)
    return out


@pytest.mark.parametrize("family", GEMMAS)
def test_logits_match_transformers(gemma_dirs, family):
    hf = transformers.AutoModelForCausalLM.from_pretrained(gemma_dirs[family]).eval()
    ours = load_hf_model(gemma_dirs[family])
    assert ours.cfg.family == family
    ids, mask, pos = _batch()
    ref = _hf_logits(hf, ids, mask, pos)
    got = _ours(ours, ids, mask, pos)
    assert _max_rel_err(got, ref, mask) < 1e-5, family
    if family == "gemma2":  # the caps bound the logits (the window and caps are exercised)
        assert np.abs(ref[mask]).max() < 3.0


def test_the_sliding_window_and_caps_change_the_logits(gemma_dirs):
    """Turning each Gemma 2 / 3 setting off changes the logits: the tests above see them."""
    ids, mask, pos = _batch()
    for family, changes in (
        ("gemma2", dict(sliding_window=1000)),
        ("gemma2", dict(attn_softcap=None)),
        ("gemma2", dict(final_softcap=None)),
        ("gemma2", dict(query_pre_attn_scalar=8.0)),
        ("gemma3", dict(rope_local_theta=1e6)),
        ("gemma3", dict(rope_linear_factor=1.0)),
    ):
        base = _ours(load_hf_model(gemma_dirs[family]), ids, mask, pos)
        other = _ours(load_hf_model(gemma_dirs[family], **changes), ids, mask, pos)
        assert np.abs(base - other)[mask].max() > 1e-3, (family, changes)


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_gradients_match_transformers(gemma_dirs, family):
    hf = transformers.AutoModelForCausalLM.from_pretrained(gemma_dirs[family]).eval()
    ours = load_hf_model(gemma_dirs[family])
    ids, mask, pos = _batch()
    weights = np.random.default_rng(1).normal(size=(*ids.shape, ours.cfg.vocab_size))
    weights *= mask[..., None]
    out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
             position_ids=torch.tensor(pos)).logits  # fmt: skip
    (out * torch.tensor(weights, dtype=out.dtype)).sum().backward()
    ref = hf.model.layers[0].self_attn.q_proj.weight.grad.numpy()  # [H*Dh, D]

    def loss(model):
        from r1jax.model import causal_mask

        logits = model(jnp.asarray(ids), jnp.asarray(pos), causal_mask(jnp.asarray(mask)))[0]
        return jnp.sum(logits * weights)

    grads = nnx.grad(loss)(ours)
    got = np.asarray(grads.layers[0].attn.q[...])  # [D, H, Dh]
    got = got.reshape(got.shape[0], -1).T
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("family", GEMMAS)
def test_export_roundtrip_loads_in_transformers(gemma_dirs, family, tmp_path):
    ours = load_hf_model(gemma_dirs[family])
    save_hf_model(ours, str(tmp_path / "out"))
    saved = json.load(open(tmp_path / "out" / "config.json"))
    assert config_from_hf(saved) == ours.cfg
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    ref = transformers.AutoModelForCausalLM.from_pretrained(gemma_dirs[family]).eval()
    ids, mask, pos = _batch()
    np.testing.assert_allclose(
        _hf_logits(hf, ids, mask, pos)[mask], _hf_logits(ref, ids, mask, pos)[mask], atol=1e-5
    )


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_sampler_matches_recompute_decoding(gemma_dirs, family):
    from test_sampler import PieceTokenizer, recompute_greedy

    from r1jax.sampler import Sampler, SamplingParams

    model = load_hf_model(gemma_dirs[family])
    prompts = [[5, 17, 3], [40, 2, 9, 11, 60, 7, 8], [33]]  # decoding runs past the window
    sampler = Sampler(model, tokenizer=PieceTokenizer(), max_prompt_len=8, max_new_tokens=9)
    out = sampler.generate(model, prompts, params=SamplingParams(0, ignore_eos=True))
    got = [list(map(int, row[m])) for row, m in zip(out.tokens, out.completion_mask, strict=True)]
    assert got == recompute_greedy(model, prompts, 9)


def test_presets_and_unsupported_settings_are_named(tmp_path):
    assert get_preset("gemma-3-1b").num_params == 999_885_952  # Gemma 3 1B
    assert get_preset("gemma-2-2b").num_params == 2_614_341_888  # Gemma 2 2B
    base = dict(model_type="gemma3_text", vocab_size=96, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=64, head_dim=8)  # fmt: skip
    # the older config.json of Gemma 3 on the Hub (gemma-3-4b's text part): flat rope fields
    legacy = dict(base, num_hidden_layers=12, rope_theta=1e6, rope_local_base_freq=1e4,
                  rope_scaling={"rope_type": "linear", "factor": 8.0}, sliding_window=1024,
                  sliding_window_pattern=6, query_pre_attn_scalar=256)  # fmt: skip
    cfg = config_from_hf(legacy)
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.rope_linear_factor) == (1e6, 1e4, 8.0)
    assert cfg.layer_types == (("sliding",) * 5 + ("full",)) * 2 and cfg.sliding_window == 1024
    assert (cfg.attn_softcap, cfg.final_softcap, cfg.tie_word_embeddings) == (None, None, True)
    for bad, words in (
        (dict(model_type="gemma3"), "multimodal Gemma 3"),
        (dict(hidden_activation="relu"), "hidden_activation='relu'"),
        (dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
        (dict(rope_parameters={"full_attention": {"rope_type": "yarn", "factor": 2.0}}),
         "rope type 'yarn'"),
    ):  # fmt: skip
        with pytest.raises(CheckpointError, match=words):
            config_from_hf({**base, **bad})
    with pytest.raises(ValueError, match="cannot soft-cap attention scores"):
        get_preset("tiny-gemma2").replace(attention="cudnn", dtype="bfloat16")
    get_preset("tiny").replace(attention="cudnn", dtype="bfloat16")  # unchanged for Qwen
    mixed = get_preset("tiny").replace(embed_scale=True)
    with pytest.raises(CheckpointError, match="embed_scale"):
        save_hf_model(__import__("r1jax.model", fromlist=["create_model"]).create_model(mixed),
                      str(tmp_path / "x"))  # fmt: skip
    assert jax.devices()  # (the module's device setup ran)
