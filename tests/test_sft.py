"""SFT batches, loss, sharded step, packing, learning and compile count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from r1jax import sft
from r1jax import sharding as shd
from r1jax.cold_start import COUNTDOWN_CHARS, make_countdown_sft_examples
from r1jax.data.countdown import CountdownSpec, generate_countdown
from r1jax.model import create_model, get_preset
from r1jax.optim import make_optimizer
from r1jax.sft import (
    DEVICE_KEYS,
    make_sft_batch,
    make_sft_step,
    pack_rows,
    sft_loss,
    train_sft,
)
from r1jax.tokenizer import CharTokenizer

# ids: <pad>=0 <bos>=1 <eos>=2 a=3 b=4 c=5
ABC = CharTokenizer("abc")


TOK = CharTokenizer(COUNTDOWN_CHARS)  # 36 ids: even, so the vocab splits over tensor=2
VOCAB = TOK.vocab_size


@functools.cache
def _template():
    return create_model(get_preset("tiny").replace(vocab_size=VOCAB), seed=0)


def _tiny(mesh_shape: tuple[int, int, int] | None = None):
    """A fresh copy of one tiny model (training donates buffers), placed on ``mesh_shape``."""
    graphdef, state = nnx.split(_template())
    if mesh_shape is not None:  # resharding may reuse device 0's buffers for replicated leaves
        state = jax.device_put(state, shd.state_shardings(state, shd.make_mesh(mesh_shape)))
    copy = jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), state)
    return nnx.merge(graphdef, copy)


def _one_device():
    return shd.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def _loss(model, batch, chunk_size=256):
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, b: sft_loss(graphdef, s, b, chunk_size))
    loss, metrics = fn(state, {k: jnp.asarray(batch[k]) for k in DEVICE_KEYS})
    return float(loss), jax.device_get(metrics)


# ---------------------------------------------------------------- batches (hand-checked)


def test_batch_unpacked_hand_checked():
    b = make_sft_batch(ABC, [("ab", "c"), ("a", "bb")], max_len=6)
    np.testing.assert_array_equal(b["tokens"], [[1, 3, 4, 5, 2, 0], [1, 3, 4, 4, 2, 0]])
    np.testing.assert_array_equal(b["input_mask"], [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(b["loss_mask"], [[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(b["positions"][:, :5], [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 1, 1, 1, 0]] * 2)
    assert b["tokens"].dtype == np.int32 and b["loss_mask"].dtype == np.float32
    assert int(b["num_truncated"]) == 0 and int(b["num_dropped"]) == 0


def test_batch_packed_hand_checked():
    b = make_sft_batch(ABC, [("ab", "c"), ("a", "bb"), ("c", "")], max_len=12, pack=True)
    # lengths 5, 5, 3: rows [[0, 1], [2]] (the third does not fit the 2 tokens left)
    np.testing.assert_array_equal(
        b["tokens"], [[1, 3, 4, 5, 2, 1, 3, 4, 4, 2, 0, 0], [1, 5, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        b["segment_ids"], [[1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 0], [1, 1, 1] + [0] * 9]
    )
    np.testing.assert_array_equal(b["positions"][0, :10], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(b["positions"][1, :3], [0, 1, 2])
    np.testing.assert_array_equal(
        b["loss_mask"], [[0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0], [0, 0, 1] + [0] * 9]
    )
    np.testing.assert_array_equal(b["input_mask"].sum(1), [10, 3])


def test_pack_rows_best_fit():
    assert pack_rows([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    assert pack_rows([4, 6, 2], 8) == [[0], [1, 2]]  # best fit (first fit would give [[0, 2], [1]])
    assert pack_rows([8, 1, 7], 8) == [[0], [1, 2]]
    with pytest.raises(ValueError, match="example 1 has length 9"):
        pack_rows([1, 9], 8)


def test_overlong_policies_and_num_rows():
    ex = [("a", "b"), ("ab", "cabc")]  # lengths 4 and 8
    with pytest.raises(ValueError, match="example 1 has 8 tokens"):
        make_sft_batch(ABC, ex, max_len=6)
    t = make_sft_batch(ABC, ex, max_len=6, overlong="truncate")
    assert int(t["num_truncated"]) == 1
    np.testing.assert_array_equal(t["tokens"][1], [1, 3, 4, 5, 3, 4])  # EOS cut off
    np.testing.assert_array_equal(t["loss_mask"][1], [0, 0, 0, 1, 1, 1])
    # a prompt that fills max_len alone leaves no target: dropped, not truncated
    t = make_sft_batch(ABC, [*ex, ("abcab", "c")], max_len=6, overlong="truncate", num_rows=3)
    assert (int(t["num_truncated"]), int(t["num_dropped"])) == (1, 1)
    assert t["input_mask"][2].sum() == 0 and t["loss_mask"].sum() == 2 + 3
    d = make_sft_batch(ABC, ex, max_len=6, overlong="drop", num_rows=4)
    assert int(d["num_dropped"]) == 1 and d["tokens"].shape == (4, 6)
    assert d["input_mask"][1:].sum() == 0
    with pytest.raises(ValueError, match="num_rows=1"):
        make_sft_batch(ABC, ex, max_len=8, num_rows=1)
    with pytest.raises(ValueError, match="overlong"):
        make_sft_batch(ABC, ex, max_len=8, overlong="cut")


def test_bad_examples_raise():
    no_bos = CharTokenizer("abc", add_bos=False)
    with pytest.raises(ValueError, match="example 1 has an empty prompt"):
        make_sft_batch(no_bos, [("a", "b"), ("", "b")], max_len=8)
    with pytest.raises(ValueError, match="example 0 must be a"):
        make_sft_batch(ABC, [("a", 3)], max_len=8)
    with pytest.raises(ValueError, match="non-empty"):
        make_sft_batch(ABC, [], max_len=8)
    with pytest.raises(ValueError, match=r"SFT example 1 \(prompt 'b'\) cannot be tokenized: .*"
                       "character 'z'"):  # fmt: skip
        make_sft_batch(ABC, [("a", "b"), ("b", "z")], max_len=8)


# ---------------------------------------------------------------- loss


@pytest.fixture(scope="module")
def model():
    """A tiny model for read-only loss checks."""
    return _tiny()


def _naive_loss(model, batch):
    """Full [B, T, V] logits; NumPy float64 log-softmax, shift by one, masked mean."""
    tokens, valid = batch["tokens"], batch["input_mask"]
    t = tokens.shape[1]
    mask = np.tril(np.ones((t, t), bool))[None] & valid[:, None, :] & valid[:, :, None]
    positions = np.broadcast_to(np.arange(t), tokens.shape)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a)[0])
    logits = forward(state, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    logits = np.asarray(logits, np.float64)[:, :-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    targets = tokens[:, 1:]
    taken = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    w = batch["loss_mask"][:, 1:]
    acc = ((logits.argmax(-1) == targets) * w).sum() / w.sum()
    return -(taken * w).sum() / w.sum(), acc


def test_loss_matches_naive_reference(model):
    ex = [("123", "4567"), ("8", "1"), ("77", "888888"), ("12345678", "")]
    batch = make_sft_batch(TOK, ex, max_len=11)
    ref_loss, ref_acc = _naive_loss(model, batch)
    for chunk_size in (256, 3):  # one chunk; several chunks with a padded last one
        loss, metrics = _loss(model, batch, chunk_size)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        np.testing.assert_allclose(metrics["accuracy"], ref_acc, atol=1e-6)
        assert metrics["tokens"] == 5 + 2 + 7 + 1


def test_packed_loss_equals_unpacked(model):
    ex = [("123", "4567"), ("8", "1"), ("77", "888"), ("281", "3165")]
    unpacked = make_sft_batch(TOK, ex, max_len=10)
    packed = make_sft_batch(TOK, ex, max_len=32, pack=True)
    assert packed["tokens"].shape[0] == 1 and packed["segment_ids"].max() == 4
    loss_u, m_u = _loss(model, unpacked)
    loss_p, m_p = _loss(model, packed)
    np.testing.assert_allclose(loss_p, loss_u, rtol=1e-5)
    np.testing.assert_allclose(m_p["accuracy"], m_u["accuracy"], atol=1e-6)
    # The check is sensitive: without segment masking and restarting positions it differs.
    naive = dict(packed, segment_ids=packed["input_mask"].astype(np.int32))
    naive["positions"] = np.arange(32, dtype=np.int32)[None]
    assert abs(_loss(model, naive)[0] - loss_u) > 1e-3


# ---------------------------------------------------------------- step on a mesh, compile count


def _two_steps(mesh_shape, batches):
    """Two SFT steps from the same init; returns the states after each and the metrics."""
    model = _tiny(mesh_shape)
    mesh = shd.make_mesh(mesh_shape) if mesh_shape else _one_device()
    graphdef, state = nnx.split(model)
    tx = make_optimizer(1e-2, total_steps=1, grad_clip=0.5)
    step, init_opt, state_sh = make_sft_step(graphdef, state, tx, mesh, chunk_size=4)
    opt_state, out = init_opt(state), []
    for b in batches:
        b = {k: jax.device_put(b[k], shd.batch_sharding(mesh)) for k in DEVICE_KEYS}
        state, opt_state, metrics = step(state, opt_state, b)
        out.append((jax.device_get(state), jax.device_get(metrics)))
    assert step._cache_size() == 1  # different batches (unpacked, packed): one compilation
    return out, state


def test_sharded_step_matches_single_device_and_compiles_once():
    ex = [("123", "4567"), ("8", "1"), ("77", "888"), ("281", "3165")] * 2
    batches = [
        make_sft_batch(TOK, ex, max_len=10),
        make_sft_batch(TOK, [("1", "2"), ("8", "77"), ("3", "4"), ("12", "3")] * 4, 10, pack=True),
    ]
    ref, _ = _two_steps(None, batches)
    out, state = _two_steps((2, 2, 2), batches)
    for (st, m), (ref_st, ref_m) in zip(out, ref, strict=True):
        for key in ("loss", "accuracy", "grad_norm", "tokens"):
            np.testing.assert_allclose(m[key], ref_m[key], rtol=1e-5)
        # Adam turns gradients near zero (where summation order matters) into lr-sized steps
        # of either sign: all but a handful of entries must agree to 1e-5, all to 5% of lr.
        pairs = zip(jax.tree.leaves(st), jax.tree.leaves(ref_st), strict=True)
        diff = np.concatenate([np.abs(a - b).ravel() for a, b in pairs])
        assert diff.max() < 5e-4 and np.mean(diff > 1e-5) < 1e-3, (diff.max(), np.sum(diff > 1e-5))
    assert ref[0][1]["grad_norm"] > 0.5  # clipping was active
    init = jax.device_get(nnx.state(_template()))
    moved = max(
        float(np.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(ref[0][0]), jax.tree.leaves(init), strict=True)
    )
    assert moved > 5e-3  # the step really changed the parameters
    q = state["layers"][0]["attn"]["q"][...]
    assert q.sharding.spec == P("fsdp", "tensor", None)  # the new params stay sharded


def test_batch_not_divisible_by_mesh_raises(model):
    with pytest.raises(ValueError, match="batch_size=6 is not divisible"):
        train_sft(
            model,
            TOK,
            [("1", "2")],
            steps=1,
            batch_size=6,
            lr=1e-3,
            max_len=4,
            mesh=shd.make_mesh((8, 1, 1)),
            progress=False,
        )


# ---------------------------------------------------------------- learning


def test_tiny_model_memorises_toy_set_without_recompiling(monkeypatch):
    ex = [(f"{a}+{b}=", str(a + b)) for a in range(4) for b in range(4)]
    compiles, seen_at_step = [], []

    def listener(event, duration, **kwargs):
        # every new program is lowered, also when the persistent cache has its executable
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            compiles.append(event)

    def assemble_and_count(*args, **kwargs):  # called once per step, before the step runs
        seen_at_step.append(len(compiles))
        return assemble(*args, **kwargs)

    assemble = sft.assemble_rows
    monkeypatch.setattr(sft, "assemble_rows", assemble_and_count)
    model = _tiny()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        model, hist = train_sft(
            model,
            TOK,
            ex,
            steps=60,
            batch_size=16,
            lr=3e-3,
            max_len=8,
            log_every=10,
            progress=False,
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(seen_at_step) == 60 and seen_at_step[1] >= 1  # the listener saw step 1 compile
    assert len(compiles) == seen_at_step[1]  # nothing compiled after the first step
    losses = [h["loss"] for h in hist]
    assert len(hist) == 6 and hist[-1]["step"] == 60
    assert losses[-1] < 0.25 * losses[0], losses
    assert hist[-1]["accuracy"] > 0.8
    # The returned (and updated in place) model has the trained parameters.
    final, _ = _loss(model, make_sft_batch(TOK, ex, max_len=8))
    assert final < 0.5 * losses[0]


def test_cold_start_examples_batch_round_trip():
    records = generate_countdown(CountdownSpec(seed=0, max_value=20, max_target=50), "train", 12)
    ex = make_countdown_sft_examples(records, rng=np.random.default_rng(0), reflect_prob=0.5)
    b = make_sft_batch(TOK, ex, max_len=256, pack=True)
    assert b["tokens"].shape[0] < len(ex)  # really packed
    completions = []
    for r in range(b["tokens"].shape[0]):
        for seg in range(1, b["segment_ids"][r].max() + 1):
            sel = b["segment_ids"][r] == seg
            target = b["tokens"][r][sel & (b["loss_mask"][r] == 1)]
            assert target[-1] == TOK.eos_id
            completions.append(TOK.decode(target))
    assert sorted(completions) == sorted(c for _, c in ex)


# ---------------------------------------------------------------- checkpoints and resume

TOY = [(f"{a}+{b}=", str(a + b)) for a in range(4) for b in range(4)]
RESUME_SCRIPT = """
import json
import sys
import numpy as np
from flax import nnx
from r1jax.cold_start import COUNTDOWN_CHARS
from r1jax.model import create_model, get_preset
from r1jax.sft import train_sft
from r1jax.tokenizer import CharTokenizer

tok = CharTokenizer(COUNTDOWN_CHARS)
examples = [(f"{a}+{b}=", str(a + b)) for a in range(4) for b in range(4)]
model = create_model(get_preset("tiny").replace(vocab_size=tok.vocab_size), seed=0)
model, history = train_sft(model, tok, examples, steps=9, batch_size=8, lr=3e-3, max_len=8,
                           log_every=2, progress=False, checkpoint_dir=sys.argv[1] or None,
                           checkpoint_every=3)
flat = {"/".join(map(str, p)): np.asarray(v.get_value())
        for p, v in nnx.to_flat_state(nnx.state(model))}
np.savez(sys.argv[2], **flat)
print("steps", [h["step"] for h in history])
timing = ("step_time_s", "target_tokens_per_s")
print("rows", json.dumps([{k: v for k, v in h.items() if k not in timing} for h in history]))
"""


def _flat(model):
    return {
        "/".join(map(str, p)): np.asarray(v.get_value())
        for p, v in nnx.to_flat_state(nnx.state(model))
    }


def test_sft_killed_mid_run_resumes_on_the_same_trajectory(tmp_path):
    """SIGKILL after step 5 (checkpoints every 3 steps), the same call again: the final params
    equal those of an uninterrupted run bit for bit (16 examples in batches of 8: the data
    position crosses epoch boundaries, each epoch with its own shuffle), and so do the log
    entries, also the one whose window spans the checkpoint (logs every 2 steps: step 4
    averages steps 3 and 4, and step 3 ran before the kill)."""
    import os
    import subprocess
    import sys

    from r1jax.sft_checkpoint import KILL_ENV

    script = tmp_path / "sft_run.py"
    script.write_text(RESUME_SCRIPT)
    ckpt = str(tmp_path / "ckpt")

    def run(ckpt_dir, out, **env):
        return subprocess.run([sys.executable, str(script), ckpt_dir, str(tmp_path / out)],
                              env=dict(os.environ, **env), capture_output=True, text=True,
                              timeout=600)  # fmt: skip

    killed = run(ckpt, "killed.npz", **{KILL_ENV: "5"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert sorted(os.listdir(ckpt)) == ["3"]
    resumed = run(ckpt, "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed SFT from {ckpt} step 3" in resumed.stdout
    assert "steps [4, 6, 8, 9]" in resumed.stdout
    straight = run("", "straight.npz")
    assert straight.returncode == 0, straight.stderr
    rows = {r["step"]: r for r in _printed_rows(straight.stdout)}
    assert _printed_rows(resumed.stdout) == [rows[s] for s in (4, 6, 8, 9)]
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "straight.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _printed_rows(stdout: str) -> list[dict]:
    import json

    return json.loads(next(line for line in stdout.splitlines() if line.startswith("rows "))[5:])


def test_ctrl_c_saves_the_sft_and_the_same_call_finishes_it(tmp_path, capsys):
    import os
    import signal

    from r1jax.checkpoint import CheckpointError

    def interrupt_at_4(entry):
        if entry["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)

    args = dict(steps=9, batch_size=8, lr=3e-3, max_len=8, log_every=1, progress=False)
    # step 4 is also a periodic checkpoint: saving it again on Ctrl-C must not fail
    args |= dict(mesh=_one_device(), checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt, match="SFT interrupted at step 4; saved step 4 to"):
        train_sft(_tiny(), TOK, TOY, on_log=interrupt_at_4, **args)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "4"]
    model, history = train_sft(_tiny(), TOK, TOY, **args)
    assert [h["step"] for h in history] == [5, 6, 7, 8, 9]
    capsys.readouterr()
    again, history = train_sft(_tiny(), TOK, TOY, **dict(args, steps=6))  # a shorter plan
    assert history == [] and "is at step 9, steps=6: nothing to train" in capsys.readouterr().out
    np.testing.assert_array_equal(_flat(again)["embed"], _flat(model)["embed"])
    straight, _ = train_sft(_tiny(), TOK, TOY, **dict(args, checkpoint_dir=None))
    for k, v in _flat(straight).items():
        np.testing.assert_array_equal(_flat(model)[k], v, err_msg=k)
    # other examples or batch size: refused, naming what changed; nothing deleted
    with pytest.raises(CheckpointError, match=r"examples: saved '[0-9a-f]+', now .*num_exa"):
        train_sft(_tiny(), TOK, TOY[:-1], **args)
    with pytest.raises(CheckpointError, match="batch_size: saved 8, now 4"):
        train_sft(_tiny(), TOK, TOY, **dict(args, batch_size=4))
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["8", "9"]


def test_held_out_loss_is_the_loss_of_all_held_out_examples_at_once():
    """The held-out eval runs its examples in padded micro-batches (here 5 examples in 2
    batches of 4 rows); token-weighted, that is the loss of one batch holding them all."""
    held_out = [("12", "345"), ("9", "9999"), ("55", "1"), ("3", "21"), ("7", "654")]
    one_batch = make_sft_batch(TOK, held_out, max_len=8)
    before = _loss(_tiny(), one_batch)
    logged = []
    args = dict(steps=4, batch_size=8, grad_accum=2, lr=3e-3, max_len=8, log_every=10)
    model, history = train_sft(_tiny(), TOK, TOY, progress=False, on_log=logged.append,
                               eval_examples=held_out, eval_every=2, **args)  # fmt: skip
    assert [e["step"] for e in logged] == [0, 2, 4]  # before, every 2 steps, after the last
    assert [h["step"] for h in history] == [2, 4] and "loss" not in logged[0]
    after = _loss(model, one_batch)
    for entry, (loss, metrics) in ((logged[0], before), (logged[-1], after)):
        np.testing.assert_allclose(entry["eval_loss"], loss, rtol=1e-5)
        np.testing.assert_allclose(entry["eval_accuracy"], metrics["accuracy"], atol=1e-6)
        assert entry["eval_tokens"] == metrics["tokens"] == 4 + 5 + 2 + 3 + 4
    assert logged[-1]["eval_loss"] != logged[0]["eval_loss"]
