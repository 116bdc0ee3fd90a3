"""Reward-model training (r1jax.rm): Bradley-Terry loss and gradients against a per-row loop
reference, learning, resumption after Ctrl-C, evaluation and input errors."""

from __future__ import annotations

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_count import backend_compiles
from flax import nnx

from r1jax import sharding as shd
from r1jax.checkpoint import CheckpointError
from r1jax.interrupt import Preempted
from r1jax.model import ModelConfig, causal_mask, create_model
from r1jax.rm import (
    assemble_pairs,
    bradley_terry_loss,
    evaluate_pairs,
    fit_pairs,
    tokenize_pairs,
    train_reward_model,
)
from r1jax.tokenizer import CharTokenizer

TOK = CharTokenizer("ab?= ")


def _model(seed: int = 0, mesh=None, **cfg):
    cfg = ModelConfig(vocab_size=TOK.vocab_size, num_labels=1, **cfg)
    return create_model(cfg, mesh, seed=seed)


def _more_a_pairs(n: int, seed: int) -> list[tuple[str, str, str]]:
    """Pairs whose chosen response has more 'a' than the rejected one."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        k = int(rng.integers(3, 9))
        x, y = ("".join(rng.choice(list("ab"), k)) for _ in range(2))
        if x.count("a") != y.count("a"):
            out.append(("a?", *((x, y) if x.count("a") > y.count("a") else (y, x))))
    return out


def _row_score(model, ids) -> jax.Array:
    """Reference: one unpadded row ``ids [T]``, the score head on its last hidden state."""
    tokens = jnp.asarray(ids, jnp.int32)[None]
    mask = jnp.ones_like(tokens, bool)
    pos = jnp.arange(len(ids))[None]
    hidden, _ = model(tokens, pos, causal_mask(mask), return_hidden=True)
    return (hidden[0, -1] @ model.score[...])[0]


def _pair_scores(model, seqs) -> tuple[np.ndarray, np.ndarray]:
    """Reference ``(chosen [P], rejected [P])`` scores, one unpadded row at a time (a program
    per row length)."""
    graphdef, state = nnx.split(model, nnx.Param)
    score = jax.jit(lambda state, ids: _row_score(nnx.merge(graphdef, state), ids))
    state = jax.device_put(state, jax.devices()[0])
    return tuple(np.array([score(state, np.asarray(p[i])) for p in seqs]) for i in (0, 1))


def _reference_loss(model, seqs, center_coef: float):
    """Reference Bradley-Terry loss, scoring one unpadded row at a time; aux: the chosen and
    rejected scores ``[P]`` and the loss without the centering term."""
    chosen = jnp.stack([_row_score(model, c) for c, _ in seqs])
    rejected = jnp.stack([_row_score(model, r) for _, r in seqs])
    diff = chosen - rejected
    plain = jnp.mean(jnp.log1p(jnp.exp(-diff)))
    return plain + center_coef * jnp.mean((chosen + rejected) ** 2), (chosen, rejected, plain)


def test_loss_metrics_and_gradients_match_a_per_row_reference():
    center_coef = 0.1
    model = _model(seed=1)
    pairs = [("a?", "ab", "bbbb a"), ("b?", "aaaa", "b"), ("?", "a b a", "ba"), ("ab", "b", "a")]
    seqs, _, _ = fit_pairs(tokenize_pairs(TOK, pairs), 12)
    batch = assemble_pairs(seqs, range(len(seqs)), 12, TOK.pad_id)
    graphdef, state = nnx.split(model, nnx.Param)

    grad_fn = jax.value_and_grad(bradley_terry_loss, argnums=1, has_aux=True)
    (loss, m), grads = jax.jit(grad_fn, static_argnums=(0, 3))(graphdef, state, batch, center_coef)

    def ref(state):
        return _reference_loss(nnx.merge(graphdef, state), seqs, center_coef)

    # one reference program: loss, scores and the plain loss as aux, gradients
    (ref_loss, (chosen, rejected, ref_plain)), ref_grads = jax.jit(
        jax.value_and_grad(ref, has_aux=True)
    )(state)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for (path, g), (_, r) in zip(
        nnx.to_flat_state(grads), nnx.to_flat_state(ref_grads), strict=True
    ):
        np.testing.assert_allclose(g.get_value(), r.get_value(), rtol=1e-4, atol=1e-6,
                                   err_msg=str(path))  # fmt: skip
    chosen, rejected = np.asarray(chosen), np.asarray(rejected)
    np.testing.assert_allclose(m["chosen"], chosen.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["rejected"], rejected.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["margin"], (chosen - rejected).mean(), rtol=1e-5, atol=1e-6)
    assert float(m["accuracy"]) == pytest.approx(np.mean(chosen > rejected))
    assert float(m["tokens"]) == sum(len(c) + len(r) for c, r in seqs)
    assert np.abs(np.asarray(grads["score"].get_value())).sum() > 0
    # without the centering term: the plain Bradley-Terry loss
    plain, _ = jax.jit(bradley_terry_loss, static_argnums=(0, 3))(graphdef, state, batch, 0.0)
    np.testing.assert_allclose(plain, ref_plain, rtol=1e-5, atol=1e-6)
    assert abs(float(plain) - float(loss)) > 1e-4


def test_pairs_rows_layout_and_overlong_policies():
    seqs = tokenize_pairs(TOK, [("a?", "ab", "b"), ("b", "aaaa", "bb")])
    assert seqs[0][0] == [TOK.bos_id, *TOK.encode("a?ab", add_bos=False), TOK.eos_id]
    batch = assemble_pairs(seqs, [1, 0], 9, TOK.pad_id)
    assert batch["tokens"].shape == (4, 9)
    assert batch["input_mask"].sum(1).tolist() == [7, 6, 5, 5]  # chosen rows, then rejected
    with pytest.raises(ValueError, match="pair 1 has a row of 7 tokens > max_len=6"):
        fit_pairs(seqs, 6)
    kept, truncated, dropped = fit_pairs(seqs, 6, "truncate")
    assert (truncated, dropped) == (1, 0) and kept[1][0] == seqs[1][0][-6:]
    kept, truncated, dropped = fit_pairs(seqs, 6, "drop")
    assert (len(kept), truncated, dropped) == (1, 0, 1)
    with pytest.raises(ValueError, match="triple"):
        tokenize_pairs(TOK, [("a", "b")])
    with pytest.raises(ValueError, match=r"pair 1 \(prompt 'b'\) cannot be tokenized: .*'z'"):
        tokenize_pairs(TOK, [("a?", "ab", "b"), ("b", "a", "z")])


def test_training_learns_a_preference_and_evaluation_matches_a_loop():
    mesh = shd.make_mesh((4, 2, 1))
    train, held = _more_a_pairs(320, 0), _more_a_pairs(40, 1)
    model = _model(mesh=mesh)
    kw = dict(max_len=14, batch_size=12, mesh=mesh)
    before = evaluate_pairs(model, TOK, held, **kw)
    model, history = train_reward_model(
        model, TOK, train, steps=40, batch_size=16, lr=3e-3, max_len=14, mesh=mesh,
        log_every=10, progress=False,
    )  # fmt: skip
    with backend_compiles() as lowered:
        after = evaluate_pairs(model, TOK, held, **kw)
    assert not lowered  # the scorer compiled for `before` is reused
    assert before["loss"] > 0.6 and after["loss"] < 0.25, (before, after)
    assert after["accuracy"] >= 0.95 and after["margin"] > 2.0
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["step"] == 40
    # evaluate_pairs (batched, the last batch padded) equals per-pair scores
    seqs, _, _ = fit_pairs(tokenize_pairs(TOK, held), 14)
    chosen, rejected = _pair_scores(model, seqs)
    diff = chosen - rejected
    assert after["pairs"] == len(held)
    assert after["accuracy"] == pytest.approx(np.mean(diff > 0))
    np.testing.assert_allclose(after["margin"], diff.mean(), rtol=1e-4)


def _train(tmp_path, on_log=None, **changes):
    mesh = shd.make_mesh((4, 2, 1))
    kw = dict(steps=6, batch_size=8, lr=3e-3, max_len=14, mesh=mesh, log_every=1,
              progress=False, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2,
              on_log=on_log)  # fmt: skip
    kw.update(changes)
    return train_reward_model(_model(seed=2, mesh=mesh), TOK, _more_a_pairs(64, 3), **kw)


def test_sigterm_saves_and_the_rerun_resumes_bit_for_bit(tmp_path):
    """SIGTERM (a preemption) stops the loop after the step, saves it and raises Preempted
    (r1jax exits 143 on it); the rerun continues exactly (SFT's test sends Ctrl-C instead)."""
    straight, _ = _train(tmp_path / "a")

    def preempt_at_3(entry):
        if entry["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted, match=r"^reward model stopped by SIGTERM at step 3; saved step "
                       r"3 to .*/b/ckpt; the same command resumes$"):  # fmt: skip
        _train(tmp_path / "b", on_log=preempt_at_3)
    assert sorted(os.listdir(tmp_path / "b" / "ckpt")) == ["2", "3"]
    resumed, history = _train(tmp_path / "b")
    assert [h["step"] for h in history] == [4, 5, 6]
    for (path, a), (_, b) in zip(
        nnx.to_flat_state(nnx.state(straight, nnx.Param)),
        nnx.to_flat_state(nnx.state(resumed, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()),
                                      err_msg=str(path))  # fmt: skip
    with pytest.raises(CheckpointError, match="center_coef: saved 0.0, now 0.5"):
        _train(tmp_path / "b", center_coef=0.5)


def test_bad_inputs_are_named():
    lm = create_model(ModelConfig(vocab_size=TOK.vocab_size))
    with pytest.raises(ValueError, match="num_labels=0"):
        train_reward_model(lm, TOK, _more_a_pairs(4, 0), steps=1, batch_size=2, lr=1e-3,
                           max_len=14, progress=False)  # fmt: skip
    mesh = shd.make_mesh((4, 2, 1))
    with pytest.raises(ValueError, match=r"2 \* batch_size=6 rows is not divisible"):
        train_reward_model(_model(mesh=mesh), TOK, _more_a_pairs(4, 0), steps=1, batch_size=3,
                           lr=1e-3, max_len=14, mesh=mesh, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="steps=0"):
        train_reward_model(_model(), TOK, _more_a_pairs(4, 0), steps=0, batch_size=2, lr=1e-3,
                           max_len=14, progress=False)  # fmt: skip
