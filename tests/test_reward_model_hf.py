"""Sequence classifiers / reward models (``num_labels > 0``): score parity with
``transformers`` ``*ForSequenceClassification``, export, and a causal LM loaded as a reward
model with a fresh score head."""

import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_fixtures import TINY, make_hf_model  # noqa: E402

from r1jax import sharding as shd  # noqa: E402
from r1jax.model import (  # noqa: E402
    ModelConfig,
    abstract_model,
    causal_mask,
    create_model,
    positions_from_mask,
    reward_model_from,
)
from r1jax.model.hf import load_hf_model, save_hf_model  # noqa: E402
from r1jax.model.safetensors_io import SafetensorsFile  # noqa: E402

PAD = TINY["vocab_size"] - 1  # the HF pad id; never drawn as a real token
LENGTHS = (10, 7, 3, 1)  # a full row, two padded rows and a one-token row
T = 10
CLASS_NAMES = {"qwen2": "Qwen2", "qwen3": "Qwen3", "llama": "Llama", "gemma2": "Gemma2",
               "gemma3": "Gemma3Text"}  # fmt: skip


def _make_hf_classifier(family: str, path: str, num_labels: int = 1, seed: int = 0):
    """A random tiny HF ``*ForSequenceClassification`` (backbone from
    :func:`hf_fixtures.make_hf_model`: random biases and norms), saved to ``path``."""
    lm = make_hf_model(family, path + "_lm", seed=seed)
    cfg = copy.deepcopy(lm.config)
    cfg.num_labels = num_labels
    cfg.pad_token_id = PAD
    cfg.architectures = None
    torch.manual_seed(seed + 1)
    model = getattr(transformers, f"{CLASS_NAMES[family]}ForSequenceClassification")(cfg)
    model.model.load_state_dict(lm.model.state_dict(), strict=True)
    model.eval()
    w = model.score.weight.detach().numpy()
    assert w.shape == (num_labels, TINY["hidden_size"]) and w.std() > 0.1  # a real head
    model.save_pretrained(path)
    return model


def _batches(seed: int = 0):
    """The same rows right-padded (HF pad id in the padding) and left-padded (garbage ids in
    the padding): ``(right_ids, right_mask, left_ids, left_mask)``, each ``[4, T]``."""
    rng = np.random.RandomState(seed)
    b = len(LENGTHS)
    right = np.full((b, T), PAD, np.int64)
    left = rng.randint(0, TINY["vocab_size"], (b, T))  # padding must not matter to r1jax
    rmask = np.zeros((b, T), bool)
    lmask = np.zeros((b, T), bool)
    for i, n in enumerate(LENGTHS):
        real = rng.randint(0, PAD, n)
        right[i, :n], rmask[i, :n] = real, True
        left[i, T - n :], lmask[i, T - n :] = real, True
    return right, rmask, left, lmask


def _hf_scores(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)))
    return out.logits.numpy()


def _jitted_scores(model, mesh):
    """``sequence_scores`` as a training step would call it: jitted, traced on the mesh."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(shd.on_mesh(lambda s, t, m: nnx.merge(graphdef, s).sequence_scores(t, m), mesh))
    return lambda ids, mask: np.asarray(fn(state, jnp.asarray(ids), jnp.asarray(mask)))


def _mesh():
    return shd.make_mesh((2, 2, 2))  # data 2, fsdp 2 (splits score's embed dim), tensor 2


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "llama", "gemma2", "gemma3"])
def test_scores_match_transformers(family, tmp_path):
    path = str(tmp_path / "clf")
    hf = _make_hf_classifier(family, path)
    mesh = _mesh()
    model = load_hf_model(path, mesh)
    assert model.cfg.num_labels == 1 and model.cfg.family == family
    assert not hasattr(model, "lm_head")
    score = model.score[...]
    assert score.shape == (TINY["hidden_size"], 1)
    assert len(score.sharding.device_set) == 8
    scores = _jitted_scores(model, mesh)
    right, rmask, left, lmask = _batches()
    ref = _hf_scores(hf, right, rmask)
    assert ref.shape == (len(LENGTHS), 1)
    assert np.ptp(ref) > 0.1  # rows really differ: a wrong pooled token would show
    ours = scores(right, rmask)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # left padding: the same rows, other padding, the same scores
    np.testing.assert_allclose(scores(left, lmask), ours, rtol=1e-5, atol=1e-5)


def test_three_label_classifier_matches_transformers(tmp_path):
    path = str(tmp_path / "clf3")
    hf = _make_hf_classifier("qwen3", path, num_labels=3, seed=3)
    mesh = shd.make_mesh((2, 1, 2), devices=jax.devices()[:4])  # data 2, tensor 2
    model = load_hf_model(path, mesh)
    assert model.cfg.num_labels == 3
    scores = _jitted_scores(model, mesh)
    right, rmask, left, lmask = _batches(seed=1)
    ref = _hf_scores(hf, right, rmask)
    assert ref.shape == (len(LENGTHS), 3)
    np.testing.assert_allclose(scores(right, rmask), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores(left, lmask), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family,num_labels", [("qwen2", 1), ("llama", 3), ("gemma3", 1)])
def test_export_roundtrip_loads_in_transformers(family, num_labels, tmp_path):
    src = str(tmp_path / "clf")
    hf = _make_hf_classifier(family, src, num_labels=num_labels, seed=5)
    model = load_hf_model(src)
    out = str(tmp_path / "export")
    save_hf_model(model, out, pad_token_id=PAD)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == [f"{CLASS_NAMES[family]}ForSequenceClassification"]
    assert config["pad_token_id"] == PAD
    assert len(config["id2label"]) == num_labels and len(config["label2id"]) == num_labels
    names = set(SafetensorsFile(os.path.join(out, "model.safetensors")).keys())
    assert "score.weight" in names and "lm_head.weight" not in names
    hf2 = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(hf2).__name__ == config["architectures"][0]
    assert hf2.config.num_labels == num_labels
    right, rmask, _, _ = _batches(seed=2)
    ref = _hf_scores(hf, right, rmask)
    np.testing.assert_allclose(_hf_scores(hf2, right, rmask), ref, rtol=0, atol=1e-6)
    again = load_hf_model(out)  # and r1jax reads its own classifier export
    assert again.cfg == model.cfg
    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    again_flat = dict(nnx.to_flat_state(nnx.state(again, nnx.Param)))
    assert set(again_flat) == set(flat) and ("score",) in flat
    for p, v in again_flat.items():
        np.testing.assert_array_equal(np.asarray(v.get_value()), np.asarray(flat[p].get_value()))


@pytest.mark.parametrize("family", ["qwen2", "qwen2_tied"])
def test_causal_lm_loads_as_reward_model(hf_dirs, family):
    path = hf_dirs[family]
    lm = load_hf_model(path)
    rm = load_hf_model(path, num_labels=1)
    assert rm.cfg.num_labels == 1
    lm_flat = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(lm, nnx.Param))}
    rm_flat = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(rm, nnx.Param))}
    assert ("score",) in rm_flat and not any(p[0] == "lm_head" for p in rm_flat)
    assert set(rm_flat) - {("score",)} == set(lm_flat) - {("lm_head",)}
    for p in set(rm_flat) - {("score",)}:  # the whole backbone is the language model's
        np.testing.assert_array_equal(np.asarray(rm_flat[p]), np.asarray(lm_flat[p]), str(p))
    assert ("layers", 0, "attn", "q") in rm_flat and ("embed",) in rm_flat

    score = np.asarray(rm.score[...])
    assert score.shape == (TINY["hidden_size"], 1) and score.dtype == np.float32
    assert 0.01 < score.std() < 0.03 and abs(score.mean()) < 0.015
    # deterministic, and the same when created sharded over a mesh
    mesh = _mesh()
    sharded = load_hf_model(path, mesh, num_labels=1)
    assert len(sharded.score[...].sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(sharded.score[...]), score)
    np.testing.assert_array_equal(np.asarray(load_hf_model(path, num_labels=1).score[...]), score)
    # an in-memory language model turned into a reward model is the same model
    converted = reward_model_from(load_hf_model(path, mesh), mesh)
    assert converted.cfg == sharded.cfg
    conv_flat = dict(nnx.to_flat_state(nnx.state(converted, nnx.Param)))
    assert set(conv_flat) == set(rm_flat)
    for p, v in conv_flat.items():
        np.testing.assert_array_equal(np.asarray(v.get_value()), np.asarray(rm_flat[p]), str(p))

    with pytest.raises(ValueError, match="num_labels"):
        rm.lm_head_weight()
    # the score reads the language model's final hidden state at each row's last real token
    right, rmask, _, _ = _batches(seed=4)
    ids, mask = jnp.asarray(right), jnp.asarray(rmask)
    pos = positions_from_mask(mask)
    hidden = nnx.jit(lambda m: m(ids, pos, causal_mask(mask), return_hidden=True)[0])(lm)
    last = np.asarray(LENGTHS) - 1
    expected = np.asarray(hidden)[np.arange(len(LENGTHS)), last] @ score
    ours = np.asarray(nnx.jit(lambda m, ids, mask: m.sequence_scores(ids, mask))(rm, ids, mask))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


def test_sequence_scores_needs_a_score_head(hf_dirs):
    lm = load_hf_model(hf_dirs["qwen2"])
    with pytest.raises(ValueError, match="num_labels"):
        lm.sequence_scores(jnp.zeros((1, 3), jnp.int32), jnp.ones((1, 3), bool))


def test_negative_num_labels_rejected():
    with pytest.raises(ValueError, match="num_labels"):
        ModelConfig(num_labels=-1)


def _param_sizes(model) -> dict:
    return {
        p: int(np.prod(v.get_value().shape))
        for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def test_num_params_counts_created_parameters():
    """Untied: the config whose language model would have an ``lm_head`` (the tied one is
    counted on shapes below; ``create_model`` costs seconds of compiling on CPU)."""
    cfg = ModelConfig(num_labels=1, tie_word_embeddings=False)
    model = create_model(cfg)
    sizes = _param_sizes(model)
    assert cfg.num_params == sum(sizes.values())
    assert model.score[...].shape == (cfg.hidden_size, 1)
    assert not any(p[0] == "lm_head" for p in sizes)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_labels=1, tie_word_embeddings=True),
        dict(num_labels=1, tie_word_embeddings=False),
        dict(num_labels=3, tie_word_embeddings=False, qkv_bias=True),
        dict(num_labels=2, family="qwen3", qk_norm=True),
        dict(num_labels=0, tie_word_embeddings=False),  # the language model, for contrast
    ],
)
def test_num_params_counts_abstract_parameters(overrides):
    """The same count for more configs, on the shapes only (no compile)."""
    cfg = ModelConfig(**overrides)
    sizes = _param_sizes(abstract_model(cfg))
    assert cfg.num_params == sum(sizes.values())
    assert (("score",) in sizes) == bool(cfg.num_labels)
    assert (("lm_head",) in sizes) == (not cfg.num_labels)


def test_reward_model_from_lm_exports_for_transformers(hf_dirs, tmp_path):
    """A tied language model turned into a reward model (fresh head), exported: transformers
    reads it as a classifier and scores as r1jax does."""
    rm = load_hf_model(hf_dirs["qwen2_tied"], num_labels=1)
    out = str(tmp_path / "rm")
    save_hf_model(rm, out, pad_token_id=PAD)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(hf).__name__ == "Qwen2ForSequenceClassification"
    np.testing.assert_array_equal(hf.score.weight.detach().numpy(), np.asarray(rm.score[...]).T)
    right, rmask, _, _ = _batches(seed=6)
    ours = np.asarray(rm.sequence_scores(jnp.asarray(right), jnp.asarray(rmask)))
    np.testing.assert_allclose(ours, _hf_scores(hf, right, rmask), rtol=1e-5, atol=1e-6)
