"""Logit parity with ``transformers`` on tiny random checkpoints, import and export."""

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from r1jax.model import causal_mask, positions_from_mask
from r1jax.model.hf import CheckpointError, load_hf_model, save_hf_model
from r1jax.model.safetensors_io import SafetensorsFile

FAMILIES = ["qwen2", "qwen3", "llama", "qwen2_tied"]


def _batch(offset: int = 0):
    """A left-padded batch [3, 12] with different prompt lengths; positions start at offset."""
    rng = np.random.RandomState(0)
    ids = rng.randint(0, 96, (3, 12))
    mask = np.ones((3, 12), bool)
    mask[0, :5] = False
    mask[1, :2] = False
    pos = np.array(positions_from_mask(jnp.asarray(mask))) + offset
    return ids, mask, pos


def _hf_logits(model, ids, mask, pos):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            position_ids=torch.tensor(pos),
        )
    return out.logits.numpy()


@nnx.jit
def _forward(model, ids, mask, pos):
    return model(ids, pos, causal_mask(mask))[0]


def _ours(model, ids, mask, pos):
    return np.asarray(_forward(model, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(pos)))


def _max_rel_err(a, b, mask):
    return float(np.abs(a - b)[mask].max() / np.abs(b[mask]).max())


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(hf_dirs, family):
    path = hf_dirs[family]
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    model = load_hf_model(path)
    for offset in (0, 1000):  # 1000 exercises the low-frequency rope band (llama3 scaling)
        ids, mask, pos = _batch(offset)
        err = _max_rel_err(_ours(model, ids, mask, pos), _hf_logits(hf, ids, mask, pos), mask)
        assert err < 1e-4, (family, offset, err)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_match_transformers(hf_dirs, family):
    """Every parameter's gradient equals torch autograd's through ``transformers``: covers the
    hand-written backwards of the projections (``dense``) and of the rotary embedding."""
    import jax

    from r1jax.model.hf import hf_name, to_hf_array

    path = hf_dirs[family]
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    model = load_hf_model(path)
    ids, mask, pos = _batch(1000)
    weights = np.random.RandomState(1).randn(*ids.shape, model.cfg.vocab_size).astype(np.float32)
    weights *= mask[..., None]  # padded positions carry no loss

    def loss(m):
        logits, _ = m(jnp.asarray(ids), jnp.asarray(pos), causal_mask(jnp.asarray(mask)))
        return jnp.sum(logits * weights)

    grads = nnx.to_pure_dict(nnx.jit(nnx.grad(loss))(model))
    out = hf(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask.astype(np.int64)),
        position_ids=torch.tensor(pos),
    ).logits
    (out * torch.tensor(weights)).sum().backward()
    hf_grads = {n: p.grad.numpy() for n, p in hf.named_parameters()}
    checked = set()
    for keypath, g in jax.tree_util.tree_leaves_with_path(grads):
        key = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in keypath)
        name, _ = hf_name(key)
        ours, ref = to_hf_array(key, np.asarray(g)), hf_grads[name]
        err = float(np.abs(ours - ref).max() / np.abs(ref).max())
        assert err < 1e-4, (family, name, err)
        checked.add(name)
    assert checked == set(hf_grads)


def test_llama3_rope_scaling_is_used(hf_dirs):
    """Loading the llama checkpoint without its rope scaling must change the logits."""
    path = hf_dirs["llama"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    model = load_hf_model(path, rope_scaling=None)
    ids, mask, pos = _batch(1000)
    assert _max_rel_err(_ours(model, ids, mask, pos), _hf_logits(hf, ids, mask, pos), mask) > 1e-3


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama"])
def test_export_roundtrip_loads_in_transformers(hf_dirs, family, tmp_path):
    model = load_hf_model(hf_dirs[family])
    out = str(tmp_path / "export")
    # A tiny shard size forces the sharded (index) layout.
    save_hf_model(model, out, max_shard_bytes=20_000)
    assert os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    hf2 = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids, mask, pos = _batch(7)
    err = _max_rel_err(_ours(model, ids, mask, pos), _hf_logits(hf2, ids, mask, pos), mask)
    assert err < 1e-4
    again = load_hf_model(out)  # and r1jax reads its own sharded export
    np.testing.assert_allclose(
        _ours(again, ids, mask, pos), _ours(model, ids, mask, pos), rtol=1e-6, atol=1e-6
    )


def test_export_over_an_earlier_save_leaves_no_stale_weights(hf_dirs, tmp_path, caplog):
    """A sharded save, then a single-file save to the same directory: the old shards and index
    go (the index would win when loading), and the directory loads the new weights."""
    model = load_hf_model(hf_dirs["qwen2"])
    out = str(tmp_path / "out")
    save_hf_model(model, out, max_shard_bytes=20_000)
    assert len([n for n in os.listdir(out) if n.endswith(".safetensors")]) > 2
    doubled = load_hf_model(hf_dirs["qwen2"])
    nnx.update(doubled, jax.tree.map(lambda x: x * 2, nnx.state(doubled)))
    with caplog.at_level(logging.WARNING):
        save_hf_model(doubled, out)
    assert sorted(n for n in os.listdir(out) if n != "config.json") == ["model.safetensors"]
    assert "00006.safetensors, model.safetensors.index.json of an earlier save" in caplog.text
    again = load_hf_model(out)
    np.testing.assert_array_equal(np.asarray(again.embed[...]), np.asarray(doubled.embed[...]))
    with pytest.raises(ValueError, match=r"dtype='int8' \(one of \('float32', 'bfloat16'"):
        save_hf_model(model, out, dtype="int8")


@pytest.mark.parametrize("mesh_shape", [(1, 1, 1), (1, 1, 2)])
def test_tensor_shapes_that_disagree_with_config_json_are_named(hf_dirs, tmp_path, mesh_shape):
    """config.json says a smaller vocabulary than the tensors have: refused on one device and
    when the tensor is split over devices (where a slice would have fit each shard)."""
    from r1jax import sharding as shd

    bad = tmp_path / "bad"
    shutil.copytree(hf_dirs["qwen2"], bad)
    config = json.loads((bad / "config.json").read_text())
    config["vocab_size"] //= 2
    (bad / "config.json").write_text(json.dumps(config))
    mesh = shd.make_mesh(mesh_shape, devices=jax.devices()[: int(np.prod(mesh_shape))])
    with pytest.raises(CheckpointError, match=r"tensor 'model.embed_tokens.weight' has shape"):
        load_hf_model(str(bad), mesh)
    truncated = tmp_path / "truncated"
    shutil.copytree(hf_dirs["qwen2"], truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor .* cannot be read"):
        load_hf_model(str(truncated))


def test_large_loads_and_exports_show_progress(hf_dirs, tmp_path, capsys, monkeypatch):
    """A bar of bytes for models of at least PROGRESS_MIN_BYTES (none for small ones)."""
    import r1jax.model.hf_names as hf_names

    model = load_hf_model(hf_dirs["qwen2"])
    save_hf_model(model, str(tmp_path / "small"))
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(hf_names, "PROGRESS_MIN_BYTES", 0)
    out = str(tmp_path / "big")
    save_hf_model(model, out, max_shard_bytes=20_000)  # several shards, one bar
    load_hf_model(out)
    err = capsys.readouterr().err
    total = sum(int(np.asarray(v.get_value()).nbytes) for _, v in nnx.to_flat_state(
        nnx.state(model)))  # fmt: skip
    for verb in ("writing", "loading"):
        lines = [x for x in err.replace("\r", "\n").splitlines() if x.startswith(f"{verb} {out}")]
        assert lines and "100%" in lines[-1], err
    assert f"{total / 1e3:.0f}k" in err or f"{total / 1e3:.1f}k" in err, (total, err)


def test_export_bf16(hf_dirs, tmp_path):
    model = load_hf_model(hf_dirs["qwen2"])
    save_hf_model(model, str(tmp_path / "bf16"), dtype="bfloat16")
    f = SafetensorsFile(str(tmp_path / "bf16" / "model.safetensors"))
    assert f.header["model.embed_tokens.weight"]["dtype"] == "BF16"
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"))
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16


def test_bf16_compute_close_to_fp32(hf_dirs):
    ids, mask, pos = _batch()
    fp32 = _ours(load_hf_model(hf_dirs["qwen3"]), ids, mask, pos)
    bf16 = _ours(
        load_hf_model(hf_dirs["qwen3"], dtype="bfloat16", param_dtype="bfloat16"), ids, mask, pos
    )
    assert _max_rel_err(bf16, fp32, mask) < 5e-2


# ----------------------------------------------------------------------------- errors


def _copy(src, tmp_path):
    dst = str(tmp_path / "ckpt")
    shutil.copytree(src, dst)
    return dst


def test_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_hf_model(str(tmp_path))


def test_unsupported_architecture(hf_dirs, tmp_path):
    path = _copy(hf_dirs["qwen2"], tmp_path)
    cfg = json.load(open(os.path.join(path, "config.json")))
    cfg["model_type"] = "gpt2"
    json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
    with pytest.raises(CheckpointError, match="model_type='gpt2' is not supported"):
        load_hf_model(path)
    cfg.update(model_type="qwen2", num_attention_heads="four")  # a TypeError traceback before
    json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
    with pytest.raises(CheckpointError, match="config.json: num_attention_heads='four' is not an"):
        load_hf_model(path)


def test_missing_weights_file(hf_dirs, tmp_path):
    path = _copy(hf_dirs["qwen2"], tmp_path)
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_hf_model(path)


def _rewrite(path, edit):
    from r1jax.model.safetensors_io import save_file

    f = SafetensorsFile(os.path.join(path, "model.safetensors"))
    tensors = {k: np.array(f.get(k)) for k in f.header}
    edit(tensors)
    save_file(list(tensors.items()), os.path.join(path, "model.safetensors"))


def test_missing_tensor_named(hf_dirs, tmp_path):
    path = _copy(hf_dirs["qwen2"], tmp_path)
    _rewrite(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
        load_hf_model(path)


def test_extra_tensor_named(hf_dirs, tmp_path):
    path = _copy(hf_dirs["qwen2"], tmp_path)
    _rewrite(path, lambda t: t.update({"model.layers.9.foo.weight": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors.*layers\.9\.foo"):
        load_hf_model(path)


def test_shape_mismatch_named(hf_dirs, tmp_path):
    path = _copy(hf_dirs["qwen2"], tmp_path)
    _rewrite(
        path,
        lambda t: t.update(
            {"model.layers.0.self_attn.k_proj.weight": np.zeros((8, 32), np.float32)}
        ),
    )
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*k_proj\.weight.*\(8, 32\)"):
        load_hf_model(path)


def test_truncated_file_named(hf_dirs, tmp_path):
    path = _copy(hf_dirs["qwen2"], tmp_path)
    fpath = os.path.join(path, "model.safetensors")
    data = open(fpath, "rb").read()
    open(fpath, "wb").write(data[: len(data) // 2])
    with pytest.raises((CheckpointError, ValueError), match="model.safetensors"):
        load_hf_model(path)


def test_convert_and_copy_tokenizer_files(hf_dirs, tmp_path):
    """``r1jax convert`` (and ``export``) carry the tokenizer and generation files along, so
    the written directory is usable as it was; other files stay behind."""
    import subprocess
    import sys

    from r1jax.model.hf import copy_tokenizer_files

    src = tmp_path / "src"
    shutil.copytree(hf_dirs["qwen2"], src)
    (src / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    (src / "generation_config.json").write_text('{"eos_token_id": 1}')
    (src / "notes.txt").write_text("not a tokenizer file")
    assert copy_tokenizer_files(str(src / "tokenizer_config.json"), str(tmp_path / "a")) == [
        "tokenizer_config.json",
        "generation_config.json",
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def convert(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "r1jax.cli", "convert", *args], cwd=root,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    r = convert(f"--src={src}", f"--dst={src}/")  # in place: refused, nothing touched
    assert r.returncode != 0 and "--src and --dst are the same directory" in r.stderr
    r = convert(f"--src={src}", f"--dst={tmp_path / 'b'}", "--dtype=int8")
    assert r.returncode != 0 and "--dtype" in r.stderr and not (tmp_path / "b").exists()
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(config, dtype="bfloat16")))
    r = convert(f"--src={src}", f"--dst={tmp_path / 'b'}")
    assert r.returncode == 0, r.stderr
    written = json.loads((tmp_path / "b" / "config.json").read_text())
    assert written["dtype"] == "bfloat16"  # the source's (old code: float32, twice the size)
    assert "tokenizer files: tokenizer_config.json, generation_config.json" in r.stdout
    assert (tmp_path / "b" / "generation_config.json").read_text() == '{"eos_token_id": 1}'
    assert not (tmp_path / "b" / "notes.txt").exists()
    load_hf_model(str(tmp_path / "b"))  # and the weights are there


def test_model_overrides_apply_to_a_hf_model_as_r1jax_info_says(hf_dirs):
    from r1jax import build
    from r1jax import sharding as shd
    from r1jax.config import base_config, model_config

    c = base_config()
    c.model.hf_path = hf_dirs["qwen2"]
    c.model.overrides.max_position_embeddings = 77
    model = build.build_model(c, shd.make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    assert model.cfg.max_position_embeddings == model_config(c).max_position_embeddings == 77
    c.model.overrides.num_layers = 1  # fewer layers than the checkpoint: named, not ignored
    with pytest.raises(CheckpointError, match="unexpected tensors.*model.layers.1"):
        build.build_model(c, shd.make_mesh((1, 1, 1), devices=jax.devices()[:1]))


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(hf_dirs):
    from r1jax import build
    from r1jax import sharding as shd
    from r1jax.config import ConfigError, base_config
    from r1jax.tokenizer import CharTokenizer

    c = base_config()
    c.model.hf_path = hf_dirs["qwen2"]
    mesh = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    vocab = build.build_model(c, mesh).cfg.vocab_size
    chars = "".join(chr(0x4E00 + i) for i in range(vocab))  # vocab + 3 specials
    with pytest.raises(ConfigError, match=f"has {vocab + 3} ids but model.hf_path=.* {vocab} "):
        build.build_model(c, mesh, CharTokenizer(chars))
    assert build.build_model(c, mesh, CharTokenizer(chars[:-3])).cfg.vocab_size == vocab


def test_tied_config_with_a_different_stored_head_is_refused(hf_dirs, tmp_path):
    """tie_word_embeddings=true plus an lm_head.weight that is not the embedding: transformers
    5 uses the stored head, 4 tied them; r1jax used the embedding silently (logits off by 24
    in the review). An lm_head equal to the embedding still loads."""
    path = _copy(hf_dirs["qwen2_tied"], tmp_path)
    embed = lambda t: t["model.embed_tokens.weight"]  # noqa: E731
    _rewrite(path, lambda t: t.update({"lm_head.weight": embed(t).copy()}))
    load_hf_model(path)
    _rewrite(path, lambda t: t.update({"lm_head.weight": embed(t) + 1.0}))
    with pytest.raises(CheckpointError, match=r"ties the output head to the embedding "
                       r"\(tie_word_embeddings=true\) but the checkpoint stores a different "
                       "lm_head.weight"):  # fmt: skip
        load_hf_model(path)


BASE_HF = dict(
    model_type="llama",
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=256,
)
LLAMA3 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)


@pytest.mark.parametrize("changes, check", [
    # HF Qwen2 always has q/k/v biases and ignores attention_bias
    (dict(model_type="qwen2", attention_bias=True), lambda c: c.qkv_bias),
    (dict(hidden_act="swish"), lambda c: True),  # the same function as silu
    # a sliding window no layer uses (from max_window_layers on: none)
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=2),
     lambda c: True),
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=None), lambda c: True),
    # llama3 rope without original_max_position_embeddings: max_position_embeddings
    (dict(rope_scaling=LLAMA3),
     lambda c: c.rope_scaling.original_max_position_embeddings == 256),
    # HF's Qwen3Config defaults head_dim to 128
    (dict(model_type="qwen3"), lambda c: c.head_dim == 128),
    # a legacy rope_scaling block replaces rope_parameters (theta from top level or 10000)
    (dict(rope_parameters=dict(rope_type="default", rope_theta=5e5), rope_scaling=LLAMA3),
     lambda c: c.rope_theta == 10000.0 and c.rope_scaling.factor == 8.0),
    (dict(rope_parameters=dict(rope_type="default", rope_theta=5e5)),
     lambda c: c.rope_theta == 5e5 and c.rope_scaling is None),
])  # fmt: skip
def test_config_json_settings_read_as_transformers_reads_them(changes, check):
    from r1jax.model.hf import config_from_hf

    assert check(config_from_hf(dict(BASE_HF, **changes)))


def test_a_sliding_window_some_layer_uses_is_refused():
    from r1jax.model.hf import config_from_hf

    hf = dict(BASE_HF, model_type="qwen2", use_sliding_window=True, sliding_window=16,
              max_window_layers=1)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"sliding-window attention \(window 16\) on "
                       r"layers \[1\] is not supported"):  # fmt: skip
        config_from_hf(hf)
    with pytest.raises(CheckpointError, match=r"on layers \[0\]"):
        config_from_hf(dict(BASE_HF, layer_types=["sliding_attention", "full_attention"]))
