"""End-to-end GRPO training: learning, exact resume after SIGKILL, checkpoint fallback."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from flax import nnx
from trainer_fixtures import CHARS, config_file, make_config

from r1jax.checkpoint import CheckpointError
from r1jax.config import ConfigError
from r1jax.perf import update_flops
from r1jax.rl.trainer import KILL_ENV, GRPOTrainer
from r1jax.run_weights import load_params, saved_steps

TESTS = os.path.dirname(__file__)
ROOT = os.path.dirname(TESTS)
VOLATILE = ("time/", "throughput/", "perf/")  # timings and what is computed from them


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _stable(row):
    return {k: v for k, v in row.items() if not k.startswith(VOLATILE)}


def _run_subprocess(tmp_path, run_name, env_extra=None, **changes):
    """Runs `GRPOTrainer(make_config(...)).train()` in a fresh process."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {TESTS!r})
        from trainer_fixtures import make_config
        from r1jax.rl.trainer import train
        train(make_config({str(tmp_path)!r}, {run_name!r}, **{changes!r}))
    """)
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _params(run_dir, step):
    import orbax.checkpoint as ocp

    path = os.path.join(run_dir, "checkpoints", str(step), "params")
    return ocp.StandardCheckpointer().restore(path)


def test_reward_rises(tmp_path):
    c = make_config(str(tmp_path), train__steps=24, train__checkpoint_every=0)
    trainer = GRPOTrainer(c)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    assert [m["step"] for m in history] == list(range(1, 25))
    rewards = np.array([m["reward/mean"] for m in history])
    assert np.mean(rewards[-6:]) > np.mean(rewards[:6]) + 0.1, rewards
    assert trainer.update_compiles() == 1  # no recompilation across steps
    m = history[-1]
    for key in (
        "reward/std",
        "groups/frac_zero_std",
        "completion/length_mean",
        "completion/frac_truncated",
        "loss/entropy",
        "loss/clip_frac_low",
        "loss/clip_frac_high",
        "loss/grad_norm",
        "optim/lr",
        "time/sample",
        "time/update",
        "throughput/sample_tokens_per_s",
    ):
        assert key in m, key
    # the sampler and the update see the same fp32 policy: their log-probs agree
    assert all(h["loss/sampler_logp_abs_diff"] < 1e-4 for h in history), history[-1]
    # model FLOPs of the update (4 prompts of bucket 8, each once for G=4 completions of 8)
    flops = update_flops(trainer.model_cfg, 4, 4, 8, 8)
    assert m["perf/update_tflops_per_s"] == pytest.approx(flops / m["time/update"] / 1e12)
    assert "perf/mfu" not in m  # a CPU has no listed peak


def test_exact_resume_after_sigkill(tmp_path):
    full = _run_subprocess(tmp_path, "full")
    killed = _run_subprocess(tmp_path, "killed", {KILL_ENV: "5"})
    assert full.wait(timeout=600) == 0, full.stdout.read()
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stdout.read()
    killed_dir = os.path.join(tmp_path, "killed")
    assert max(r["step"] for r in _rows(killed_dir)) == 5  # step 5 ran, checkpoint is at 4
    resumed = _run_subprocess(tmp_path, "killed")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out
    assert "resumed from" in out and "step 4" in out
    full_rows = [_stable(r) for r in _rows(os.path.join(tmp_path, "full"))]
    assert [_stable(r) for r in _rows(killed_dir)] == full_rows
    a, b = _params(os.path.join(tmp_path, "full"), 6), _params(killed_dir, 6)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_corrupt_latest_checkpoint_falls_back(tmp_path, caplog):
    c = make_config(str(tmp_path), train__steps=4)
    t = GRPOTrainer(c)
    t.train()
    t.close()
    ckpt = os.path.join(c.run_dir, "checkpoints")
    assert sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) == [2, 4]
    params_dir = os.path.join(ckpt, "4", "params")
    for root, _, files in os.walk(params_dir):  # truncate every data file of step 4
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(0)
    t2 = GRPOTrainer(c)
    try:
        assert t2.step == 2
        assert "cannot be restored" in caplog.text
        # the damaged step 4 is set aside (kept), so the resumed run saves its own step 4
        assert os.listdir(ckpt + ".damaged") == ["4"]
        t2.train()
    finally:
        t2.close()
    assert saved_steps(ckpt) == [2, 4]
    assert load_params(c.run_dir, t2.params)[0] == 4


def test_resume_with_a_changed_model_names_it_and_keeps_the_run(tmp_path, capsys):
    c = make_config(str(tmp_path), train__steps=2)
    t = GRPOTrainer(c)
    t.train()
    t.close()
    lr, c.optim.lr = c.optim.lr, 0.007
    t = GRPOTrainer(c)  # a finished run: says so and runs nothing; what changed is said
    try:
        assert t.train() == []
    finally:
        t.close()
    c.optim.lr = lr
    out = capsys.readouterr().out
    assert "is at step 2, train.steps=2: nothing to do" in out
    assert f"step 2; config fields changed since: optim.lr: {lr!r} -> 0.007\n" in out
    ckpt = os.path.join(c.run_dir, "checkpoints")
    before = sorted(os.listdir(ckpt))
    c.model.overrides.num_layers = 1
    with pytest.raises(CheckpointError) as e:
        GRPOTrainer(c)
    assert "layers/1/attn/q: in the checkpoint only" in str(e.value)
    assert "model.overrides.num_layers: None -> 1" in str(e.value)
    assert sorted(os.listdir(ckpt)) == before
    fewer = tmp_path / "fewer.jsonl"  # other prompts: the data position cannot continue
    fewer.write_text("".join(line for i, line in enumerate(open(tmp_path / "prompts.jsonl"))
                             if i < 32))  # fmt: skip
    c = make_config(str(tmp_path), train__steps=2, data__path=str(fewer))
    with pytest.raises(CheckpointError) as e:
        GRPOTrainer(c)
    said = str(e.value)
    assert f"checkpoint {ckpt}/2 was written for other training data" in said
    assert "'num_records': (64, 32)" in said
    assert f"data.path: {str(tmp_path / 'prompts.jsonl')!r} -> {str(fewer)!r}" in said
    assert sorted(os.listdir(ckpt)) == before
    # the same characters in another order: every id means another character (old code
    # resumed and trained on, saying only that tokenizer.chars changed)
    c = make_config(str(tmp_path), train__steps=3, tokenizer__chars=CHARS[::-1])
    with pytest.raises(CheckpointError, match=f"^checkpoint {ckpt}/2 was trained with another "
                       "tokenizer .*tokenizer.chars: '0123456789 \\+' -> "):  # fmt: skip
        GRPOTrainer(c)
    assert sorted(os.listdir(ckpt)) == before


def test_init_checkpoint_starts_from_another_runs_params(tmp_path, monkeypatch):
    first = make_config(str(tmp_path), "first", train__steps=2)
    t = GRPOTrainer(first)
    assert [m["step"] for m in t.train(keep_history=False)] == [2]  # (r1jax train's: the last)
    trained = jax.tree.leaves(t.params)
    t.close()
    for init in (first.run_dir, os.path.join(first.run_dir, "checkpoints")):
        second = make_config(str(tmp_path), "second", train__init_checkpoint=init)
        t = GRPOTrainer(second)
        try:
            assert t.step == 0
            for a, b in zip(jax.tree.leaves(t.params), trained, strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        finally:
            t.close()
    missing = str(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="init_checkpoint=.*no r1jax checkpoint there"):
        GRPOTrainer(make_config(str(tmp_path), "third", train__init_checkpoint=missing))
    assert not os.path.exists(missing)
    hf_dir = tmp_path / "a_hf_model"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="a Hugging Face model directory: give it as model"):
        GRPOTrainer(make_config(str(tmp_path), "third", train__init_checkpoint=str(hf_dir)))
    other = make_config(str(tmp_path), "other_shape", train__init_checkpoint=first.run_dir)
    other.model.overrides.num_layers = 1
    with pytest.raises(CheckpointError, match=r"^config.train.init_checkpoint='.*first': .*"
                       "holds a different model"):  # fmt: skip
        GRPOTrainer(other)
    _check_init_checkpoint_feeds_sft_and_eval(tmp_path, first.run_dir, trained, monkeypatch)


def _check_init_checkpoint_feeds_sft_and_eval(tmp_path, init, trained, monkeypatch):
    """With no checkpoint of its own, a run with ``train.init_checkpoint`` starts its cold
    start (in ``r1jax train`` and ``r1jax sft``) from those weights, and eval / sample /
    export read them (R1's stage-3 SFT from the RL checkpoint)."""
    import r1jax.recipes
    from r1jax import build
    from r1jax.sft_command import sft_command

    started = []

    class Stop(Exception):
        pass

    def fake_cold_start(c, model, tokenizer, mesh):  # records what the SFT starts from
        started.append([np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))])
        if len(started) >= 2:
            raise Stop
        return model

    def assert_trained(leaves):
        for a, b in zip(leaves, trained, strict=True):
            np.testing.assert_array_equal(a, np.asarray(b))

    monkeypatch.setattr(r1jax.recipes, "cold_start", fake_cold_start)
    c = make_config(str(tmp_path), "fourth", train__init_checkpoint=init)
    c.cold_start.update(dict(task="countdown", steps=1))
    GRPOTrainer(c).close()
    with pytest.raises(Stop):
        sft_command(c)
    assert len(started) == 2  # the old trainer skipped the cold start, r1jax sft ignored init
    for leaves in started:
        assert_trained(leaves)
    model, step, label = build.load_run_model(c, build.build_mesh(c), build.build_tokenizer(c))
    assert step is None and label == f"{init} step 2 (no checkpoint in {c.run_dir})"
    assert_trained([np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))])

    # Resuming its own SFT checkpoint, r1jax sft neither loads nor needs the init weights.
    from r1jax.checkpoint import RunCheckpointer
    from r1jax.run_weights import sft_checkpoint_dir

    own = RunCheckpointer(sft_checkpoint_dir(c.run_dir), async_save=False)
    own.save(1, nnx.state(model, nnx.Param), [np.zeros(1)], {"step": 1})
    own.close()
    c.train.init_checkpoint = str(tmp_path / "moved_away")
    with pytest.raises(Stop):
        sft_command(c)  # (old code: CheckpointError, no r1jax checkpoint at moved_away)
    assert len(started) == 3


def test_a_crash_after_the_cold_start_does_not_redo_it(tmp_path, monkeypatch):
    """The cold-start SFT is saved as step 0 before the first GRPO step: a run that dies
    before its first periodic checkpoint resumes with the SFT'd params instead of redoing it."""
    from r1jax import recipes

    calls = []

    def fake_cold_start(c, model, tokenizer, mesh):
        calls.append(1)
        model.final_norm.weight.set_value(model.final_norm.weight.get_value() * 0 + 2.0)
        return model

    monkeypatch.setattr(recipes, "cold_start", fake_cold_start)
    data = os.path.join(tmp_path, "prompts.jsonl")
    make_config(str(tmp_path))  # writes the prompt file
    c = make_config(
        str(tmp_path),
        cold_start__task="countdown",
        cold_start__steps=1,
        train__eval_every=2,
        data__eval_path=data,
    )
    t = GRPOTrainer(c)

    def crash():
        raise RuntimeError("died in step 1")

    monkeypatch.setattr(t, "train_step", crash)
    try:
        with pytest.raises(RuntimeError, match="died in step 1"):
            t.train()
    finally:
        t.close()
    t = GRPOTrainer(c)
    try:
        assert calls == [1] and t.step == 0
        np.testing.assert_array_equal(np.asarray(t.params["final_norm"]["weight"].get_value()), 2.0)
    finally:
        t.close()
    rows = [json.loads(line) for line in open(os.path.join(c.run_dir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [0]  # the step-0 eval, written once


def test_prompts_longer_than_the_sampler_takes_are_skipped_or_named(tmp_path, capsys):
    """Found when the data is built (not at the step that first draws one): skipped and
    counted by default, a ConfigError naming the first with data.drop_long_prompts off."""
    data = os.path.join(tmp_path, "mixed.jsonl")
    with open(data, "w") as f:
        for i in range(40):
            prompt = "1 2 3 4 5 6 7" if i % 5 == 0 else f"{i % 10} {i // 10}"
            f.write(json.dumps({"id": f"p{i}", "prompt": prompt, "answer": "7"}) + "\n")
    c = make_config(str(tmp_path), data__path=data)
    t = GRPOTrainer(c)
    try:
        assert "8 of 40 training prompts have more than sampling.max_prompt_len=8" in (
            capsys.readouterr().out
        )
        seen = [r["id"] for _ in range(8) for r in next(t.data)]
        assert len(seen) == 32 and "p0" not in seen and "p5" not in seen
    finally:
        t.close()
    c = make_config(str(tmp_path), "strict", data__path=data, data__drop_long_prompts=False)
    with pytest.raises(ConfigError, match="record 'p0', 14 tokens.*data.drop_long_prompts"):
        GRPOTrainer(c)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_and_exits_cleanly(tmp_path, sig, code):
    """`r1jax train` on Ctrl-C: saves after the step and exits 130 (128 + SIGINT, as `r1jax sft`
    and `rm`: the run is not finished, so `r1jax train && r1jax export` stops there). On
    SIGTERM (a scheduler's time limit or a preemption): saves and exits 143, so that the job
    counts as unfinished and can be requeued, saying that the same command resumes."""
    cfg = config_file(tmp_path, "interrupted", train__steps=1000, train__checkpoint_every=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "r1jax.cli", "train", f"--config={cfg}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = os.path.join(tmp_path, "interrupted")
    deadline = time.time() + 300
    while time.time() < deadline and not (
        os.path.exists(os.path.join(run, "metrics.jsonl")) and _rows(run)
    ):
        time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, out + err
    last = max(r["step"] for r in _rows(run))
    steps = os.listdir(os.path.join(run, "checkpoints"))
    assert str(last) in steps and 0 < last < 1000
    name = signal.Signals(sig).name
    assert f"{name}: finishing this GRPO step, saving a checkpoint, then exiting" in out
    if sig == signal.SIGINT:  # not "done": the run is not finished
        assert f"stopped at step {last} reward/mean=" in out and "of 1000 steps" in out
    if sig == signal.SIGTERM:
        said = f"GRPO stopped by SIGTERM at step {last}; saved step {last} to {run}/checkpoints"
        assert err.rstrip().endswith(f"r1jax train: {said}; the same command resumes")


@pytest.mark.parametrize("bad", ["rl__group_size"])
def test_invalid_config_fails_before_compile(tmp_path, bad):
    from r1jax.config import ConfigError

    with pytest.raises(ConfigError, match="rl.group_size=1"):
        GRPOTrainer(make_config(str(tmp_path), **{bad: 1}))


def test_user_errors_are_named_before_the_model_is_built(tmp_path, monkeypatch):
    """A misspelt reward, a missing data file and greedy sampling are named before any model
    loads (old code: after the model, the optimizer's compile and the sampler; with a 7B HF
    model that is a minute of loading)."""
    from r1jax import build
    from r1jax.config import ConfigError

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the error")

    monkeypatch.setattr(build, "build_model", no_model)
    bad = [
        (dict(rewards__functions=(("countdwn", 1.0),)), "countdwn"),
        (dict(data__path=str(tmp_path / "missing.jsonl")), "missing.jsonl"),
        (dict(sampling__temperature=0.0), "sampling.temperature=0: the G samples"),
    ]
    for changes, said in bad:
        with pytest.raises((ConfigError, FileNotFoundError), match=said):
            GRPOTrainer(make_config(str(tmp_path), **changes))


def test_all_options_run_and_resume(tmp_path):
    """mu > 1, minibatches, KL to a reference that is refreshed, dynamic sampling, masking
    truncated completions, DAPO loss; the reference params are checkpointed and restored."""
    opts = dict(
        rl__num_iterations=2,
        rl__num_minibatches=2,
        rl__beta=0.04,
        rl__ref_update_every=2,
        rl__dynamic_sampling=True,
        rl__mask_truncated=True,
        rl__loss_type="token",
        rl__eps_high=0.28,
        rl__prompts_per_step=8,
        train__steps=3,
        train__checkpoint_every=2,
    )
    c = make_config(str(tmp_path), **opts)
    t = GRPOTrainer(c)
    history = t.train()
    t.close()
    assert len(history) == 3
    m = history[-1]
    assert m["loss/kl"] >= 0 and "loss/policy_drift_kl" in m and "groups/dropped" in m
    assert m["groups/sampled"] >= 8
    assert abs(m["loss/sampler_kl"]) < 1e-6  # old_logp (computed off-policy) vs the sampler
    t2 = GRPOTrainer(c)  # resumes from step 2 with its reference params
    try:
        assert t2.step == 3 and t2.ref_params is not None
    finally:
        t2.close()


def test_file_data_eval_needs_eval_path(tmp_path):
    c = make_config(str(tmp_path), train__eval_every=2)
    with pytest.raises(ValueError, match="data.eval_path is empty: train.eval_every=2"):
        GRPOTrainer(c)


def test_update_runs_on_the_samplers_prompt_bucket(tmp_path):
    """Rows are padded to the sampler's bucket (3-token prompts -> 4), not max_prompt_len (8);
    the extra left padding changes nothing but cost (Adam's first step is ~lr * sign(g), so
    the comparison is on the loss and gradient norm, not on parameters)."""

    def first_step(name, pad_to):
        c = make_config(str(tmp_path), name, sampling__prompt_buckets=(4, 8), train__steps=1)
        t = GRPOTrainer(c)
        t.collector.prompt_len = pad_to
        try:
            return t.train_step(), sorted(t._programs)
        finally:
            t.close()

    m4, widths4 = first_step("bucket", None)
    m8, widths8 = first_step("padded", 8)
    assert widths4 == [4] and widths8 == [8]
    for key in ("reward/mean", "loss/loss", "loss/entropy", "loss/grad_norm"):
        np.testing.assert_allclose(m4[key], m8[key], rtol=1e-5, atol=1e-6)


def test_concat_left_pads_rounds_to_the_widest_bucket():
    """Dynamic-sampling rounds sampled in different prompt buckets join into one batch."""
    from r1jax.rl.rollout import Rollouts, _concat

    def roll(width, fill):
        tokens = np.full((2, width + 3), fill, np.int32)
        return Rollouts(
            records=[{}],
            tokens=tokens,
            input_mask=np.ones((2, width + 3), bool),
            completion_mask=np.ones((2, 3), bool),
            texts=["a", "b"],
            finish_reason=["length"] * 2,
            logp_sampler=np.zeros((2, 3), np.float32),
            rewards=np.zeros(2, np.float32),
            per_function={},
            reward_failures={},
        )

    out = _concat([roll(4, 5), roll(8, 6)], pad_id=0)
    assert out.tokens.shape == (4, 11) and out.input_mask.shape == (4, 11)
    np.testing.assert_array_equal(out.tokens[0], [0] * 4 + [5] * 7)
    np.testing.assert_array_equal(out.input_mask[0], [False] * 4 + [True] * 7)
    np.testing.assert_array_equal(out.tokens[2], [6] * 11)


def test_a_routed_reward_terms_metrics_average_only_the_rows_it_scores():
    from r1jax.rl.rollout import Rollouts, _select_groups
    from r1jax.rl.rollout_metrics import rollout_metrics

    n = 4
    roll = Rollouts(
        records=[{}, {}],
        tokens=np.zeros((n, 5), np.int32),
        input_mask=np.ones((n, 5), bool),
        completion_mask=np.ones((n, 3), bool),
        texts=["a"] * n,
        finish_reason=["stop"] * n,
        logp_sampler=np.zeros((n, 3), np.float32),
        rewards=np.array([1.0, 3.0, 0.5, 0.5], np.float32),
        per_function={
            "rule": np.array([0, 0, 0.5, 0.5], np.float32),
            "model": np.array([1.0, 3.0, 0, 0], np.float32),
        },  # fmt: skip
        reward_failures={},
        reward_applied={
            "rule": np.array([False, False, True, True]),
            "model": np.array([True, True, False, False]),
        },  # fmt: skip
    )
    m = rollout_metrics(roll, 2, False)
    assert m["reward/fn/model/mean"] == 2.0 and m["reward/fn/model/std"] == 1.0
    assert m["reward/fn/rule/mean"] == 0.5 and m["reward/mean"] == 1.25
    assert "reward/accuracy_mean" not in m  # no row judged
    # accuracy over the rows an accuracy reward judges (the model-only rows: NaN)
    judged = dataclasses.replace(roll, correct=np.array([np.nan, np.nan, 0, 1], np.float32))
    assert rollout_metrics(judged, 2, False)["reward/accuracy_mean"] == 0.5
    picked = _select_groups(roll, np.array([1]), 2)  # dynamic sampling keeps the masks aligned
    assert picked.reward_applied["model"].tolist() == [False, False]


def test_the_sampler_reads_the_weights_where_the_configs_rules_put_them(tmp_path):
    """With overridden sharding rules the sampler shards like the trainer, so handing it the
    policy moves nothing (it used to apply the default rules: a copy of every weight per
    step)."""
    c = make_config(str(tmp_path), train__steps=1)
    c.mesh.rules.embed = None  # default: "fsdp"
    trainer = GRPOTrainer(c)
    try:
        placed = trainer.sampler._state(trainer.params)
        for (path, a), (_, b) in zip(
            nnx.to_flat_state(trainer.params), nnx.to_flat_state(placed), strict=True
        ):
            assert a.get_value() is b.get_value(), path
        assert "fsdp" not in str(trainer.params["embed"].get_value().sharding.spec)
    finally:
        trainer.close()


def test_ctrl_c_in_a_checkpoint_step_saves_once_and_stops(tmp_path, monkeypatch):
    """Ctrl-C during step 2, which is also a periodic checkpoint: the loop stops after it and
    the exit save of the same step is not an error (it was: StepAlreadyExistsError)."""
    c = make_config(str(tmp_path), train__steps=6, train__checkpoint_every=1)
    trainer = GRPOTrainer(c)
    real = trainer.train_step

    def step_then_interrupt():
        m = real()
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return m

    monkeypatch.setattr(trainer, "train_step", step_then_interrupt)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    assert [h["step"] for h in history] == [1, 2]
    assert sorted(os.listdir(os.path.join(c.run_dir, "checkpoints"))) == ["1", "2"]


def test_resuming_a_run_without_reference_with_beta_copies_the_policy_as_reference(
    tmp_path, capsys
):
    """A checkpoint of a beta=0 run holds no reference; resumed with beta > 0, the reference
    starts as a copy of the restored policy (it was the policy's own arrays, which the update
    donates: the first step failed with 'Buffer has been deleted or donated')."""
    c = make_config(str(tmp_path), train__steps=2, train__checkpoint_every=2)
    t = GRPOTrainer(c)
    t.train()
    t.close()
    run = c.run_dir
    t = GRPOTrainer(make_config(str(tmp_path), train__steps=3, train__checkpoint_every=2,
                                rl__beta=0.04))  # fmt: skip
    try:
        assert t.step == 2 and t.ref_params is not t.params
        said = capsys.readouterr().out
        assert "rl.beta: 0.0 -> 0.04" in said
        assert ("train.steps: 2 -> 3; the checkpoint holds no reference policy (rl.beta was 0): "
                "the KL reference is the policy of step 2\n" in said)  # fmt: skip
        restored = _leaves_of(t.params)
        t.train()
        assert t.step == 3
        for a, b in zip(_leaves_of(t.ref_params), restored, strict=True):
            np.testing.assert_array_equal(a, b)  # the reference stayed the step-2 policy
    finally:
        t.close()
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert rows[-1]["step"] == 3 and abs(rows[-1]["loss/kl"]) < 1e-6  # on-policy: ref == policy
    t = GRPOTrainer(make_config(str(tmp_path), train__steps=4, train__checkpoint_every=2))
    try:  # and back to beta = 0: the saved reference is dropped, which the resume says
        assert t.step == 3 and t.ref_params is None
        assert "; rl.beta is 0 now: the checkpoint's reference policy is not used" in (
            capsys.readouterr().out
        )
    finally:
        t.close()


def _leaves_of(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_non_finite_steps_stop_the_run_after_max_bad_steps_steps(tmp_path):
    """optim.max_bad_steps counts steps, not optimizer updates (mu = 2: two per step): with
    NaN advantages the run stops after the 2nd step, naming steps and updates."""
    from r1jax.rl.trainer import TrainingError

    c = make_config(str(tmp_path), train__steps=5, optim__max_bad_steps=2, rl__num_iterations=2,
                    optim__warmup_steps=2, train__log_every=1)  # fmt: skip
    t = GRPOTrainer(c)
    real = t._rollouts

    def poisoned(seed):
        roll, batch = real(seed)
        return roll, dict(batch, advantages=batch["advantages"] * np.nan)

    t._rollouts = poisoned
    try:
        with pytest.raises(TrainingError, match=r"^2 consecutive steps \(4 optimizer updates\)"):
            t.train()
        assert t.step == 2
    finally:
        t.close()
    logged = [json.loads(line) for line in open(os.path.join(c.run_dir, "metrics.jsonl"))]
    assert [m["optim/skipped_updates"] for m in logged] == [2.0]  # step 1
    assert logged[0]["optim/lr"] == 0.0  # no update applied: the warmup has not moved


def test_dynamic_sampling_counts_only_the_groups_it_drops():
    """4 prompts x G=2, two refill rounds that leave the batch one group short: the batch is
    the 3 groups with a signal plus the first zero-variance group, and groups/dropped counts
    the 8 zero-variance groups left out (it counted the one filling the batch too)."""
    from types import SimpleNamespace

    from r1jax.rl.rollout import RolloutCollector

    g, n, p = 2, 3, 2
    rounds = iter([[1, 1, 0, 1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0, 0]])

    class Sampler:
        def generate(self, weights, texts, num_samples, params=None):
            b, r = len(texts), len(texts) * num_samples
            return SimpleNamespace(
                texts=[f"{t}#{j}" for t in texts for j in range(num_samples)],
                lengths=np.full(r, n), finish_reason=["eos"] * r,
                prompt_ids=np.ones((b, p), int), prompt_mask=np.ones((b, p), bool),
                tokens=np.ones((r, n), int), completion_mask=np.ones((r, n), bool),
                logp_policy=np.zeros((r, n)),
            )  # fmt: skip

    class Scorer:
        def submit(self, texts, rows):
            rw = np.array(next(rounds), np.float32)
            result = SimpleNamespace(total=rw, timeouts={}, errors={}, per_function={"a": rw},
                                     applied={})  # fmt: skip
            return SimpleNamespace(result=lambda: result)

    ids = iter(range(100))
    collector = RolloutCollector(
        Sampler(), Scorer(), lambda: [{"text": f"p{next(ids)}"} for _ in range(4)], g, None, 0,
        lambda s: None, True, 2,
    )  # fmt: skip
    roll = collector.collect(None, 0)
    assert [r["text"] for r in roll.records] == ["p1", "p6", "p8", "p0"]
    assert (roll.sampled_groups, roll.dropped_groups) == (12, 8)


def test_an_eval_that_sets_a_new_best_is_saved_between_checkpoint_steps(tmp_path, monkeypatch):
    """eval_every=1, checkpoint_every=4, keep 1: the best eval (step 2) is off the checkpoint
    cadence and is kept next to the last checkpoint; before, only evals on checkpoint steps
    were saved, so the best kept was another step's."""
    make_config(str(tmp_path))  # writes the prompt file
    c = make_config(str(tmp_path), train__eval_every=1, train__checkpoint_every=4,
                    train__keep_checkpoints=1, train__steps=6,
                    data__eval_path=os.path.join(tmp_path, "prompts.jsonl"))  # fmt: skip
    scores = iter([0.0, 0.1, 0.5, 0.2, 0.3, 0.4, 0.35])  # steps 0..6
    t = GRPOTrainer(c)
    monkeypatch.setattr(t, "evaluate", lambda: {t.best_metric: next(scores)})

    def step() -> dict[str, float]:  # no rollouts: only the loop's bookkeeping is looked at
        t.step += 1
        return {"reward/mean": 0.0, "completion/length_mean": 1.0}

    monkeypatch.setattr(t, "train_step", step)
    try:
        t.train()
        t.ckpt.wait()
        assert t.ckpt.steps() == [2, 6] and t.best_eval == 0.5
    finally:
        t.close()
