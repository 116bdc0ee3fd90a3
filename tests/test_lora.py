"""LoRA adapters (r1jax.model.lora): the forward pass against a NumPy merge of the weights,
the adapters' gradients against the chain rule of the full weights' gradient, GRPO and SFT
updates that train only the adapters (sharded), the reference policy, resume, the sampler,
init checkpoints and `r1jax export` (transformers loads the merged weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from test_sampler import PieceTokenizer, recompute_greedy
from trainer_fixtures import make_config, write_config_file

from r1jax import build
from r1jax import sharding as shd
from r1jax.checkpoint import CheckpointError
from r1jax.config import ConfigError, validate
from r1jax.model import causal_mask, create_model, get_preset, positions_from_mask
from r1jax.model.lora import (
    ADAPTER_STATE,
    TARGETS,
    LoRAParam,
    add_lora,
    has_lora,
    merge_lora,
    split_base,
    split_trainable,
)
from r1jax.optim import init_opt_state
from r1jax.rl.losses import LossConfig
from r1jax.rl.step import StepConfig, jit_update, make_update_fn
from r1jax.run_weights import restore_init_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# q/k/v biases and untied embeddings: every kind of weight the adapters sit next to
CFG = get_preset("tiny").replace(vocab_size=96, qkv_bias=True, tie_word_embeddings=False)
RANK, ALPHA = 4, 8.0


def _targets(model):
    """``(module, name)`` of every adapted weight."""
    for block in model.layers:
        for name in TARGETS:
            yield (block.attn if name in ("q", "k", "v", "o") else block.mlp), name


def _lora_model(mesh=None, seed=5, cfg=CFG):
    """The tiny model with adapters whose ``B`` is random (a fresh ``B`` is zero)."""
    model = create_model(cfg, mesh, seed=1)
    add_lora(model, RANK, ALPHA, seed=2, mesh=mesh)
    rng = np.random.default_rng(seed)
    for module, name in _targets(model):
        b = getattr(module, f"{name}_lora_b")
        value = rng.normal(0, 0.05, b.shape).astype(np.float32)
        b[...] = jax.device_put(value, b[...].sharding)
    return model


def _merged_in_numpy(model):
    """A plain model whose weights are ``W + alpha / r * A @ B`` computed in float64 NumPy."""
    plain = create_model(CFG, seed=1)
    for (module, name), (target, _) in zip(_targets(model), _targets(plain), strict=True):
        a = np.asarray(getattr(module, f"{name}_lora_a")[...], np.float64)
        b = np.asarray(getattr(module, f"{name}_lora_b")[...], np.float64)
        w = np.asarray(getattr(module, name)[...], np.float64)
        merged = w + ALPHA / RANK * np.tensordot(a, b, axes=1)
        getattr(target, name)[...] = jnp.asarray(merged, jnp.float32)
    return plain


def _logits(model, ids):
    mask = jnp.ones(ids.shape, bool)
    return np.asarray(model(jnp.asarray(ids), positions_from_mask(mask), causal_mask(mask))[0])


IDS = np.random.default_rng(0).integers(0, CFG.vocab_size, (3, 9))


def test_fresh_adapters_change_nothing_and_trained_ones_equal_a_numpy_merge():
    base = create_model(CFG, seed=1)
    fresh = create_model(CFG, seed=1)
    add_lora(fresh, RANK, ALPHA, seed=2)
    np.testing.assert_array_equal(_logits(fresh, IDS), _logits(base, IDS))  # B = 0
    model = _lora_model()
    want = _logits(_merged_in_numpy(model), IDS)
    assert np.abs(want - _logits(base, IDS)).max() > 0.1  # the adapters do change the model
    np.testing.assert_allclose(_logits(model, IDS), want, atol=2e-5)
    merge_lora(model)  # folded in place: no adapters left, the same function
    assert not has_lora(nnx.state(model))
    np.testing.assert_allclose(_logits(model, IDS), want, atol=2e-5)


def test_adapter_gradients_are_the_chain_rule_of_the_merged_weights_gradient():
    """dL/dA = s G B^T and dL/dB = s A^T G, with G = dL/dW of the merged model (its own
    autodiff path, no adapters)."""
    model = _lora_model()
    plain = _merged_in_numpy(model)
    weights = np.random.default_rng(1).normal(size=(*IDS.shape, CFG.vocab_size))

    def loss(m):
        mask = jnp.ones(IDS.shape, bool)
        logits = m(jnp.asarray(IDS), positions_from_mask(mask), causal_mask(mask))[0]
        return jnp.sum(logits * weights)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, LoRAParam))(model)
    full = nnx.grad(loss)(plain)
    s = ALPHA / RANK
    for i, block in enumerate(model.layers):
        for name in TARGETS:
            kind = "attn" if name in ("q", "k", "v", "o") else "mlp"
            module = getattr(block, kind)
            a = np.asarray(getattr(module, f"{name}_lora_a")[...], np.float64)
            b = np.asarray(getattr(module, f"{name}_lora_b")[...], np.float64)
            g = np.asarray(full["layers"][i][kind][name][...], np.float64)  # [K.., N..]
            k = a.ndim - 1
            want_a = s * np.tensordot(g, b, axes=(list(range(k, g.ndim)), list(range(1, b.ndim))))
            want_b = s * np.tensordot(a, g, axes=(list(range(k)), list(range(k))))
            got_a = np.asarray(grads["layers"][i][kind][f"{name}_lora_a"][...])
            got_b = np.asarray(grads["layers"][i][kind][f"{name}_lora_b"][...])
            np.testing.assert_allclose(got_a, want_a, rtol=2e-3, atol=1e-4, err_msg=name)
            np.testing.assert_allclose(got_b, want_b, rtol=2e-3, atol=1e-4, err_msg=name)


P, N, R = 6, 5, 16


def _grpo_batch(mesh):
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, CFG.vocab_size, (R, P + N)).astype(np.int32)
    input_mask = np.ones((R, P + N), bool)
    for i in range(R):
        input_mask[i, : i % 3] = False
        input_mask[i, P + N - i % 4 :] = False
    batch = {
        "tokens": tokens,
        "input_mask": input_mask,
        "loss_mask": input_mask[:, P:].astype(np.float32),
        "advantages": rng.randn(R).astype(np.float32),
    }
    return {k: jax.device_put(v, shd.batch_sharding(mesh, v.ndim)) for k, v in batch.items()}


def _grpo_steps(shape, steps=2, cfg=CFG):
    mesh = shd.make_mesh(shape)
    graphdef, params = nnx.split(_lora_model(mesh, cfg=cfg))
    opt = optax.adamw(1e-2)
    opt_state = init_opt_state(opt, split_trainable(params)[0], mesh)
    batch = _grpo_batch(mesh)
    shardings = (
        shd.state_shardings(params, mesh),
        jax.tree.map(lambda x: x.sharding, opt_state),
        {k: v.sharding for k, v in batch.items()},
    )
    cfg = StepConfig(loss=LossConfig("grpo"), prompt_len=P)
    update = jit_update(make_update_fn(graphdef, cfg, opt), *shardings)
    before = jax.device_get(params)
    for _ in range(steps):
        params, opt_state, metrics = update(params, opt_state, batch)
    return before, jax.device_get(params), opt_state, metrics


def test_grpo_update_trains_only_the_adapters_and_sharding_changes_nothing():
    before, after, opt_state, metrics = _grpo_steps((2, 2, 2))
    trained, frozen = split_trainable(after)
    was_trained, was_frozen = split_trainable(before)
    for x, y in zip(jax.tree.leaves(was_frozen), jax.tree.leaves(frozen), strict=True):
        np.testing.assert_array_equal(x, y)  # the base weights, bit for bit
    pairs = zip(jax.tree.leaves(was_trained), jax.tree.leaves(trained), strict=True)
    moved = [np.abs(x - y).max() for x, y in pairs]
    assert len(moved) == 2 * len(TARGETS) * CFG.num_layers and min(moved) > 0
    # Adam's moments exist for the adapters only
    adapters = sum(x.size for x in jax.tree.leaves(trained))
    moments = sum(x.size for x in jax.tree.leaves(opt_state) if x.ndim)
    assert moments == 2 * adapters
    assert np.isfinite(float(metrics["loss"]))
    _, single, _, _ = _grpo_steps((8, 1, 1))
    for x, y in zip(jax.tree.leaves(after), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(x, y, atol=2e-5)


@pytest.mark.parametrize("policy", ["full", "dots_no_batch"])
def test_remat_changes_nothing_in_the_update_and_the_sampler(policy):
    """Rematerialised blocks (whose frozen base weights come from outside jax.grad, and whose
    model the sampler merges outside its while_loop) give the same update and the same
    samples (nnx.remat crashed in both: "Cannot mutate Param from a different trace level")."""
    from r1jax.sampler import Sampler, SamplingParams

    _, plain, _, _ = _grpo_steps((2, 2, 2), steps=1)
    _, remat, _, metrics = _grpo_steps((2, 2, 2), steps=1, cfg=CFG.replace(remat=policy))
    assert np.isfinite(float(metrics["loss"]))
    for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    prompts = [[5, 17, 3], [40, 2, 9, 11, 60, 7, 8]]
    outs = []
    for cfg in (CFG, CFG.replace(remat=policy)):
        model = _lora_model(cfg=cfg)
        sampler = Sampler(model, tokenizer=PieceTokenizer(), max_prompt_len=8, max_new_tokens=4)
        outs.append(sampler.generate(model, prompts, params=SamplingParams(0, ignore_eos=True)))
    np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens)


def test_the_sampler_decodes_the_adapted_model():
    from r1jax.sampler import Sampler, SamplingParams

    model = _lora_model()
    prompts = [[5, 17, 3], [40, 2, 9, 11, 60, 7, 8], [33]]
    sampler = Sampler(model, tokenizer=PieceTokenizer(), max_prompt_len=8, max_new_tokens=6)
    out = sampler.generate(model, prompts, params=SamplingParams(0, ignore_eos=True))
    got = [list(map(int, row[m])) for row, m in zip(out.tokens, out.completion_mask, strict=True)]
    assert got == recompute_greedy(model, prompts, 6)  # the unmerged forward, recomputed
    assert has_lora(nnx.state(model))  # the sampler merged a copy inside its program


def test_sft_with_adapters_trains_them_alone():
    from r1jax.cold_start import COUNTDOWN_CHARS
    from r1jax.sft import train_sft
    from r1jax.tokenizer import CharTokenizer

    tok = CharTokenizer(COUNTDOWN_CHARS)
    model = create_model(get_preset("tiny").replace(vocab_size=tok.vocab_size), seed=0)
    add_lora(model, 8, 16.0)
    before = jax.device_get(split_trainable(nnx.state(model))[1])
    ex = [(f"{a}+{b}=", str(a + b)) for a in range(4) for b in range(4)]
    model, hist = train_sft(model, tok, ex, steps=40, batch_size=16, lr=1e-2, max_len=8,
                            log_every=10, progress=False)  # fmt: skip
    # (the tiny random model's small tied embeddings cap its logits near +-1.3, so the loss
    # stays above ~2.5 while the answers become its argmax)
    assert hist[0]["accuracy"] < 0.5 and hist[-1]["accuracy"] > 0.75, hist
    assert hist[-1]["loss"] < hist[0]["loss"] - 0.3, hist
    after = split_trainable(nnx.state(model))[1]
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))


def test_lora_settings_are_checked():
    for field, value in (("rank", -1), ("alpha", 0.0), ("targets", ("q", "w_in"))):
        c = make_config("/tmp", lora__rank=4)
        c.lora[field] = value
        with pytest.raises(ConfigError, match=f"config.lora.{field}"):
            validate(c, 8)


def _trainer(tmp_path, name, steps, **changes):
    from r1jax.rl.trainer import GRPOTrainer

    opts = dict(lora__rank=4, lora__alpha=8.0, rl__beta=0.05, optim__lr=2e-2, train__steps=steps)
    return GRPOTrainer(make_config(tmp_path, name, **{**opts, **changes}))


def test_grpo_run_with_adapters_keeps_the_base_as_reference_and_resumes_exactly(tmp_path):
    t = _trainer(tmp_path, "a", 2)
    base = jax.device_get(split_trainable(t.params)[1])
    t.train()
    t.close()
    resumed = _trainer(tmp_path, "a", 4)  # continues from step 2
    assert resumed.step == 2
    history = resumed.train()
    straight = _trainer(tmp_path, "b", 4)
    straight.train()
    for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    trained, frozen = split_trainable(straight.params)
    for x, y in zip(jax.tree.leaves(base), jax.tree.leaves(frozen), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
    # the reference copy is the adapters the run started from (B = 0): the base model
    ref_b = [np.asarray(v.get_value()) for p, v in nnx.to_flat_state(straight.ref_params)
             if p[-1].endswith("_lora_b")]  # fmt: skip
    assert ref_b and all(not b.any() for b in ref_b)
    assert sum(x.size for x in jax.tree.leaves(straight.ref_params)) == sum(
        x.size for x in jax.tree.leaves(trained)
    )
    assert history[-1]["loss/kl"] > 0  # the policy left its reference
    for t in (resumed, straight):
        t.close()
    # the same adapters under another alpha are another model: refused, nothing moved
    said = "trained with alpha / rank = 2, this config gives 8"
    with pytest.raises(CheckpointError, match=said):
        _trainer(tmp_path, "a", 6, lora__alpha=32.0)
    other = make_config(tmp_path, "a", lora__rank=4, lora__alpha=32.0)
    with pytest.raises(CheckpointError, match=said):
        build.load_run_model(other, shd.make_mesh((8, 1, 1)), build.build_tokenizer(other))
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == ["2", "4"]


def _base_of(model) -> nnx.State:
    """The base weights of a model with adapters (without the adapters and their scales)."""
    return nnx.split_state(nnx.state(model), ADAPTER_STATE, ...)[1]


def test_init_checkpoint_without_adapters_gives_the_base_weights(tmp_path):
    c = make_config(tmp_path, "full", train__steps=2)  # a full fine-tuning run
    from r1jax.rl.trainer import GRPOTrainer

    t = GRPOTrainer(c)
    t.train()
    t.close()
    mesh = shd.make_mesh((8, 1, 1))
    lora = make_config(tmp_path, "lora", lora__rank=4)
    model = build.build_model(lora, mesh, build.build_tokenizer(lora))
    fresh = jax.device_get(split_trainable(nnx.state(model))[0])
    assert restore_init_checkpoint(model, c.run_dir)
    adapters = split_trainable(nnx.state(model))[0]
    base = _base_of(model)
    for x, y in zip(jax.tree.leaves(fresh), jax.tree.leaves(adapters), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
    trained = nnx.state(build.load_run_model(c, mesh, build.build_tokenizer(c))[0])
    for x, y in zip(jax.tree.leaves(trained), jax.tree.leaves(base), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the same run read by a LoRA config (`r1jax rm` training adapters on a full policy)
    lora.run_dir = c.run_dir
    with pytest.raises(CheckpointError, match="LoRA adapters differ"):
        build.load_run_model(lora, mesh, build.build_tokenizer(lora))
    read, step, _ = build.load_run_model(lora, mesh, build.build_tokenizer(lora), None, True)
    assert step == 2 and has_lora(nnx.state(read))
    for x, y in zip(jax.tree.leaves(trained), jax.tree.leaves(_base_of(read)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # and the other way round: a run's adapters need the lora settings it was trained with
    plain = build.build_model(c, mesh, build.build_tokenizer(c))
    lora_run = _trainer(tmp_path, "lora2", 1)
    lora_run.train()
    lora_run.close()
    with pytest.raises(CheckpointError, match="LoRA adapters differ"):
        restore_init_checkpoint(plain, lora_run.c.run_dir)


def test_train_with_adapters_then_export_merged_and_as_peft_adapters(tmp_path):
    """A LoRA run on a HF base: `export` writes the merged model (transformers' logits equal
    the policy's) and `export --adapters` a PEFT adapter directory (PEFT on the base: the
    same logits)."""
    import peft
    import torch
    import transformers
    from hf_fixtures import make_hf_model

    base = str(tmp_path / "base")
    make_hf_model("qwen2", base)
    cfg_file = write_config_file(
        tmp_path, train__steps=2, lora__rank=4, optim__lr=5e-2, model__hf_path=base
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    said = []
    for args in (["train"], ["export", f"--dst={tmp_path / 'hf'}"],
                 ["export", "--adapters", f"--dst={tmp_path / 'adapters'}"]):  # fmt: skip
        r = subprocess.run(
            [sys.executable, "-m", "r1jax.cli", *args, f"--config={cfg_file}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        said.append(r.stdout)
    # rank 4 on the base (hidden 32, 4 heads of 8, 2 kv heads, MLP 64), per layer: q 32*4 +
    # 4*32, k and v 32*4 + 4*16, o 32*4 + 4*32, gate and up 32*4 + 4*64, down 64*4 + 4*32:
    # 2,048; two layers
    assert "LoRA adapters: 4,096 trainable parameters" in said[0], said[0]
    assert f"(PEFT) for the base model {base}" in said[2], said[2]
    assert json.load(open(tmp_path / "hf" / "config.json"))["model_type"] == "qwen2"
    c = make_config(str(tmp_path), "run", lora__rank=4, model__hf_path=base)
    policy, step, _ = build.load_run_model(c, shd.make_mesh((8, 1, 1)), build.build_tokenizer(c))
    assert step == 2 and has_lora(nnx.state(policy))
    b = np.asarray(policy.layers[0].attn.q_lora_b[...])
    assert np.abs(b).max() > 0  # the run trained its adapters
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    ours = _logits(policy, ids)
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
        np.testing.assert_allclose(ours, merged(torch.tensor(ids)).logits.numpy(), atol=1e-4)
        plain = transformers.AutoModelForCausalLM.from_pretrained(base).eval()
        before = plain(torch.tensor(ids)).logits.numpy()
        adapted = peft.PeftModel.from_pretrained(plain, str(tmp_path / "adapters")).eval()
        np.testing.assert_allclose(ours, adapted(torch.tensor(ids)).logits.numpy(), atol=1e-4)
    assert np.abs(ours - before).max() > 1e-3  # the adapters are what makes the difference


def test_reward_model_with_adapters_trains_them_and_its_score_head():
    from test_rm import TOK, _more_a_pairs

    from r1jax.model import ModelConfig
    from r1jax.rm import evaluate_pairs, train_reward_model

    mesh = shd.make_mesh((4, 2, 1))
    model = create_model(ModelConfig(vocab_size=TOK.vocab_size, num_labels=1), mesh, seed=0)
    add_lora(model, 8, 16.0, mesh=mesh)
    trainable, frozen = (jax.device_get(s) for s in split_trainable(nnx.state(model)))
    assert "score" in trainable and "score" not in frozen
    held = _more_a_pairs(40, 1)
    kw = dict(max_len=14, batch_size=12, mesh=mesh)
    before = evaluate_pairs(model, TOK, held, **kw)
    model, _ = train_reward_model(model, TOK, _more_a_pairs(320, 0), steps=40, batch_size=16,
                                  lr=1e-2, max_len=14, mesh=mesh, log_every=10,
                                  progress=False)  # fmt: skip
    after = evaluate_pairs(model, TOK, held, **kw)
    assert after["loss"] < before["loss"] - 0.2 and after["accuracy"] > 0.8, (before, after)
    now_trainable, now_frozen = split_trainable(nnx.state(model))
    for x, y in zip(jax.tree.leaves(frozen), jax.tree.leaves(now_frozen), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y))
    assert np.abs(np.asarray(now_trainable["score"][...]) - trainable["score"][...]).max() > 0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "r1jax.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # fmt: skip


def test_export_adapters_of_a_run_without_them_is_refused_and_info_shows_them(tmp_path):
    cfg_file = write_config_file(tmp_path)
    r = _cli("export", "--adapters", f"--dst={tmp_path / 'a'}", f"--config={cfg_file}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "export --adapters needs a LoRA run (config.lora.rank > 0)" in r.stderr
    assert not os.path.exists(tmp_path / "a")
    r = _cli("info", f"--config={cfg_file}", "--config.lora.rank=4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LoRA adapters: 8,192 trainable parameters" in r.stdout  # as `train` counts them
    assert "layers/0/attn/o_lora_a" in r.stdout and "layers/0/mlp/down_lora_b" in r.stdout


def test_checkpoints_hold_the_adapters_alone_and_refuse_another_base(tmp_path):
    """A LoRA run's checkpoints hold its adapters and scales (and a base fingerprint), not the
    frozen base; the base comes from the config (here the seed's random init, the run
    resumes exactly in the test above), and another base is refused. A checkpoint of the
    whole model (``save_base=True``, as before) restores into the same model."""
    from r1jax.checkpoint import RunCheckpointer

    t = _trainer(tmp_path, "a", 1)
    t.train()
    t.close()
    ck = RunCheckpointer(str(tmp_path / "a" / "checkpoints"), read_only=True)
    try:
        meta = ck.read_meta(1)
        stored = ck.manager.restore(1, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
    finally:
        ck.close()
    names = set(stored["params"])
    own, base = (dict(nnx.to_flat_state(x)) for x in split_base(t.params))
    assert names == {"/".join(map(str, p)) for p in own} and all("_lora_" in n for n in names)
    assert set(meta["base_fingerprint"]) == {"/".join(map(str, p)) for p in base}
    assert len(meta["param_shapes"]) == len(own) + len(base)  # (shapes: of the whole model)
    # another base (another seed's random init) under these adapters: refused, naming it
    from r1jax.rl.trainer import GRPOTrainer

    other = make_config(tmp_path, "a", lora__rank=4, lora__alpha=8.0, train__steps=2)
    other.seed = 4
    mesh = shd.make_mesh((8, 1, 1))
    said = "holds LoRA adapters without their base weights, and this config's base differs"
    with pytest.raises(CheckpointError, match=said + r" .* \(saved: model.hf_path=''"):
        build.load_run_model(other, mesh, build.build_tokenizer(other))
    with pytest.raises(CheckpointError, match=said):
        GRPOTrainer(other)
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == ["1"]
    # the whole model, saved as before adapters-only checkpoints: restores the same
    whole = RunCheckpointer(str(tmp_path / "whole"), async_save=False, save_base=True)
    try:
        whole.save(1, t.params, t.opt_state, {"step": 1})
        assert "base_fingerprint" not in whole.read_meta(1)
        fresh = _trainer(tmp_path, "b", 1)  # the same config: fresh adapters on the same base
        got = whole.restore_params(fresh.params)
        fresh.close()
    finally:
        whole.close()
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(t.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_adapters_trained_on_an_init_checkpoint_are_read_back_on_it(tmp_path):
    """LoRA RL after a full run (``train.init_checkpoint``): its checkpoints' base is that
    run's weights, which resume, eval/export (``load_run_model``) and ``r1jax sft`` load
    before the adapters; without the init checkpoint the base differs and is refused."""
    from r1jax.rl.trainer import GRPOTrainer

    full = make_config(tmp_path, "full", train__steps=1, optim__lr=5e-2)
    t = GRPOTrainer(full)
    t.train()
    t.close()
    lora = _trainer(tmp_path, "lora", 1, train__init_checkpoint=full.run_dir)
    lora.train()
    lora.close()
    resumed = _trainer(tmp_path, "lora", 2, train__init_checkpoint=full.run_dir)
    try:
        assert resumed.step == 1
        for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(lora.params),
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    finally:
        resumed.close()
    mesh = shd.make_mesh((8, 1, 1))
    c = lora.c
    model, step, _ = build.load_run_model(c, mesh, build.build_tokenizer(c))
    assert step == 1
    for x, y in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(lora.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    c.train.init_checkpoint = ""
    with pytest.raises(CheckpointError, match=r"\(saved: model.hf_path='', train.init_checkpoint="):
        build.load_run_model(c, mesh, build.build_tokenizer(c))
