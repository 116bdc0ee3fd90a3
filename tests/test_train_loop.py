"""Gradient accumulation of the supervised stages (r1jax.train_loop): micro-batches give the
full batch's gradient and metrics, sharded, for SFT (token-weighted) and reward models
(pairs kept together); the settings reach train_sft / train_reward_model; epochs -> steps."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from r1jax import sharding as shd
from r1jax.cold_start import COUNTDOWN_CHARS
from r1jax.model import ModelConfig, create_model, get_preset
from r1jax.rm import DEVICE_KEYS as RM_KEYS
from r1jax.rm import assemble_pairs, bradley_terry_loss, train_reward_model
from r1jax.sft import DEVICE_KEYS as SFT_KEYS
from r1jax.sft import (
    fit_sequences,
    make_sft_batch,
    make_sft_step,
    sft_loss,
    steps_for_epochs,
    tokenize_examples,
    train_sft,
)
from r1jax.tokenizer import CharTokenizer
from r1jax.train_loop import make_train_step

TOK = CharTokenizer(COUNTDOWN_CHARS)
MESH = (2, 2, 2)  # data * fsdp = 4 row groups, the weights split over tensor = 2


def _sft_model(mesh):
    cfg = get_preset("tiny").replace(vocab_size=TOK.vocab_size)
    return create_model(cfg, mesh, seed=0)


def _rm_model(mesh):
    return create_model(ModelConfig(vocab_size=TOK.vocab_size, num_labels=1), mesh, seed=1)


def _sgd_step(step_fn, state, tx, batch, mesh, keys=SFT_KEYS):
    """One step with SGD(lr=1): returns ``(params - grads, metrics, step)``, on the host."""
    step, init_opt, state_sh = step_fn
    state = jax.device_put(state, state_sh, may_alias=False)  # the step donates it
    batch = {k: jax.device_put(batch[k], shd.batch_sharding(mesh)) for k in keys}
    new, _, metrics = step(state, init_opt(state), batch)
    return jax.device_get(new), jax.device_get(metrics), step


def _close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=atol)


def _max_diff(a, b) -> float:
    return max(
        float(np.abs(x - y).max()) for x, y in zip(*map(jax.tree.leaves, (a, b)), strict=True)
    )


# Completions of very different lengths: the micro-batches hold unequal numbers of targets.
SFT_EXAMPLES = [("1", "2"), ("23", "4+5+6+7+8=30"), ("9", "1"), ("12", "345*6")] * 4


def test_sft_accumulation_equals_the_full_batch_step():
    mesh = shd.make_mesh(MESH)
    batch = make_sft_batch(TOK, SFT_EXAMPLES, max_len=16)
    graphdef, state = nnx.split(_sft_model(mesh))
    init = jax.device_get(state)
    tx = optax.sgd(1.0)
    full, full_m, _ = _sgd_step(make_sft_step(graphdef, state, tx, mesh, chunk_size=4), state,
                                tx, batch, mesh)  # fmt: skip
    grads = jax.tree.map(lambda a, b: a - b, init, full)
    for k in (2, 4):
        fns = make_sft_step(graphdef, state, tx, mesh, chunk_size=4, grad_accum=k)
        new, m, step = _sgd_step(fns, state, tx, batch, mesh)
        _close(new, full, atol=1e-6)
        for key in ("loss", "accuracy", "tokens", "grad_norm"):
            np.testing.assert_allclose(m[key], full_m[key], rtol=1e-5)
        assert step._cache_size() == 1
    assert full_m["tokens"] == sum(len(c) + 1 for _, c in SFT_EXAMPLES)
    assert _max_diff(grads, jax.tree.map(np.zeros_like, grads)) > 1e-3  # real gradients
    # Control: equal weights (a mean of micro-batch means) are not the full-batch gradient.
    plain = make_train_step(functools.partial(sft_loss, chunk_size=4), SFT_KEYS, graphdef,
                            state, tx, mesh, grad_accum=4)  # fmt: skip
    unweighted, m, _ = _sgd_step(plain, state, tx, batch, mesh)
    assert _max_diff(unweighted, full) > 1e-4
    assert abs(m["loss"] - full_m["loss"]) > 1e-3


def _rm_batch(pairs):
    seqs = [
        (TOK.encode(p + c) + [TOK.eos_id], TOK.encode(p + r) + [TOK.eos_id]) for p, c, r in pairs
    ]
    return assemble_pairs(seqs, list(range(len(seqs))), 12, TOK.pad_id)


def test_reward_model_accumulation_keeps_pairs_and_equals_the_full_batch():
    mesh = shd.make_mesh(MESH)
    pairs = [("1", "2+3", "4"), ("5", "6", "7*8*9"), ("1", "23", "2"), ("4", "5", "6")] * 2
    batch = _rm_batch(pairs)  # [16, 12]: 8 chosen rows, then 8 rejected rows
    graphdef, state = nnx.split(_rm_model(mesh))
    tx = optax.sgd(1.0)
    loss = functools.partial(bradley_terry_loss, center_coef=0.1)
    full, full_m, _ = _sgd_step(make_train_step(loss, RM_KEYS, graphdef, state, tx, mesh),
                                state, tx, batch, mesh, RM_KEYS)  # fmt: skip
    fns = make_train_step(loss, RM_KEYS, graphdef, state, tx, mesh, grad_accum=2)
    new, m, _ = _sgd_step(fns, state, tx, batch, mesh, RM_KEYS)
    _close(new, full, atol=1e-6)
    for key in ("loss", "accuracy", "margin", "chosen", "rejected", "tokens", "grad_norm"):
        np.testing.assert_allclose(m[key], full_m[key], rtol=1e-5, atol=1e-7)
    assert full_m["grad_norm"] > 1e-3


def test_train_functions_accumulate_and_check_the_split():
    mesh = shd.make_mesh(MESH)
    kw = dict(steps=3, batch_size=16, lr=1e-3, max_len=16, mesh=mesh, progress=False)
    _, one = train_sft(_sft_model(mesh), TOK, SFT_EXAMPLES, **kw)
    _, two = train_sft(_sft_model(mesh), TOK, SFT_EXAMPLES, grad_accum=2, **kw)
    np.testing.assert_allclose(two[-1]["loss"], one[-1]["loss"], rtol=1e-3)
    assert two[-1]["tokens"] == one[-1]["tokens"]
    with pytest.raises(ValueError, match=r"data\*fsdp=4 x grad_accum=8"):
        train_sft(_sft_model(mesh), TOK, SFT_EXAMPLES, grad_accum=8, **kw)
    pairs = [("1", "2+3", "4"), ("5", "6", "7*8")] * 4
    rm = dict(steps=2, lr=1e-3, max_len=12, mesh=mesh, progress=False)
    _, one = train_reward_model(_rm_model(mesh), TOK, pairs, batch_size=8, **rm)
    _, two = train_reward_model(_rm_model(mesh), TOK, pairs, batch_size=8, grad_accum=2, **rm)
    np.testing.assert_allclose(two[-1]["loss"], one[-1]["loss"], rtol=1e-3)
    with pytest.raises(ValueError, match="batch_size=6 pairs do not split into grad_accum=4"):
        train_reward_model(_rm_model(mesh), TOK, pairs, batch_size=6, grad_accum=4, **rm)


def test_bfloat16_params_accumulate_in_float32():
    """model.param_dtype=bfloat16 with grad_accum > 1 trains (the bf16 gradients summed into
    a bf16 carry came out float32 and the scan refused: a 30-line JAX traceback); the
    accumulated update stays close to the full batch's and the params stay bfloat16."""
    mesh = shd.make_mesh(MESH)
    kw = dict(steps=2, batch_size=16, lr=1e-2, max_len=16, mesh=mesh, progress=False)
    out = {}
    for k in (1, 2):
        model = _sft_model(mesh)
        model = create_model(model.cfg.replace(param_dtype="bfloat16"), mesh, seed=0)
        model, history = train_sft(model, TOK, SFT_EXAMPLES, grad_accum=k, **kw)
        state = nnx.state(model, nnx.Param)
        assert {x.dtype.name for x in jax.tree.leaves(state)} == {"bfloat16"}
        out[k] = history[-1]["loss"]
    np.testing.assert_allclose(out[2], out[1], rtol=2e-2)


def test_epochs_set_the_steps():
    seqs, _, _ = fit_sequences(tokenize_examples(TOK, SFT_EXAMPLES), 16)
    assert steps_for_epochs(seqs, 2, 5, 16, pack=False, seed=0) == 7  # ceil(2 * 16 / 5)
    assert steps_for_epochs(seqs, 0.1, 64, 16, pack=False, seed=0) == 1
    packed = steps_for_epochs(seqs, 1, 1, 16, pack=True, seed=0)
    lengths = sum(len(ids) for ids, _ in seqs)
    assert -(-lengths // 16) <= packed < len(seqs)  # rows hold several examples
    with pytest.raises(ValueError, match="epochs=0"):
        steps_for_epochs(seqs, 0, 4, 16, pack=False, seed=0)
    mesh = shd.make_mesh(MESH)
    kw = dict(batch_size=8, lr=1e-3, max_len=16, mesh=mesh, progress=False, log_every=1)
    _, hist = train_sft(_sft_model(mesh), TOK, SFT_EXAMPLES, epochs=1.5, **kw)
    assert hist[-1]["step"] == 3  # ceil(1.5 * 16 / 8)
    with pytest.raises(ValueError, match="give one of steps=3 and epochs=1"):
        train_sft(_sft_model(mesh), TOK, SFT_EXAMPLES, steps=3, epochs=1, **kw)


def test_a_loop_whose_steps_are_all_non_finite_stops_with_a_training_error(tmp_path):
    """SFT / cold start / RM: non-finite steps are skipped and counted (skipped_updates);
    after train_loop.MAX_BAD_STEPS in a row the loop raises instead of finishing with the
    untrained model."""
    import jax.numpy as jnp

    from r1jax.train_loop import MAX_BAD_STEPS, TrainingError, run_train_loop

    mesh = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    model = create_model(get_preset("tiny"), mesh, seed=0)
    poison = {"on": False}

    def loss_fn(graphdef, state, batch):
        w = jax.tree.leaves(state)[0]
        loss = jnp.mean(batch["x"]) * jnp.sum(w) ** 2 * 1e-6
        loss = loss * (jnp.nan if poison["on"] else 1.0)
        return loss, {"loss": loss}

    def batches(first):
        while True:
            yield {"x": np.ones((4, 8), np.float32)}

    kw = dict(optimizer=dict(lr=1e-3, warmup_steps=10), mesh=mesh, log_every=2, progress=False)
    _, hist = run_train_loop(model, loss_fn, ["x"], batches, steps=4, **kw)
    assert [h["skipped_updates"] for h in hist] == [0.0, 0.0]
    assert [h["lr"] for h in hist] == pytest.approx([1e-4, 3e-4])  # warmup: 1e-4 per update
    poison["on"] = True  # traced into a new program: every step's loss is NaN
    model = create_model(get_preset("tiny"), mesh, seed=0)
    ckpt = str(tmp_path / "ckpt")
    logged = []
    with pytest.raises(TrainingError, match=rf"SFT: the last {MAX_BAD_STEPS + 1} steps \(to step "
                       rf"{MAX_BAD_STEPS + 1}\) had non-finite loss/gradients and were skipped; "
                       f"the last good checkpoint is in {ckpt}"):  # fmt: skip
        run_train_loop(model, loss_fn, ["x"], batches, steps=20, checkpoint_dir=ckpt,
                       checkpoint_every=1, on_log=logged.append, **kw)  # fmt: skip
    assert [h["skipped_updates"] for h in logged] == [2.0, 4.0]
    assert [h["lr"] for h in logged] == [0.0, 0.0]  # skipped updates leave the warmup at 0


def test_step_time_counts_the_wait_for_the_devices():
    """JAX dispatches steps ahead of the devices: the loop's step_time_s must include the wait
    for the window's queued steps (its metrics fetch), not only their dispatch. Each step here
    multiplies 512 x 512 matrices 8 times, which alone takes longer than dispatching it."""
    import time

    import jax.numpy as jnp

    from r1jax.train_loop import run_train_loop

    mesh = shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    model = create_model(get_preset("tiny"), mesh, seed=0)

    def loss_fn(graphdef, state, batch):
        w = jax.tree.leaves(state)[0]
        a = jnp.full((512, 512), jnp.mean(batch["x"]) / 512)
        for _ in range(8):
            a = jnp.tanh(a @ a) / 512
        loss = jnp.mean(a) * jnp.sum(w) ** 2 * 1e-6
        return loss, {"loss": loss}

    def batches(first):
        while True:
            yield {"x": np.ones((4, 8), np.float32)}

    kw = dict(optimizer=dict(lr=1e-3), mesh=mesh, log_every=4, progress=False)
    run_train_loop(model, loss_fn, ["x"], batches, steps=4, **kw)  # compiles
    start = time.perf_counter()
    _, hist = run_train_loop(model, loss_fn, ["x"], batches, steps=8, **kw)
    wall = time.perf_counter() - start
    assert [h["step"] for h in hist] == [4, 8]
    assert sum(h["step_time_s"] for h in hist) * 4 > 0.5 * wall, (hist, wall)
