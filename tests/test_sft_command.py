"""`r1jax sft` on a file of traces: killed, resumed, evaluated, then continued by `r1jax train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from flax import nnx
from trainer_fixtures import config_file, make_config, start_two_cli_processes, wait_all

from r1jax.config import ConfigError
from r1jax.sft_checkpoint import KILL_ENV

TESTS = os.path.dirname(__file__)
ROOT = os.path.dirname(TESTS)


def _sft_changes(tmp_path) -> dict:
    """A file-traces cold start (6 steps) of the trainer fixture's run."""
    traces = tmp_path / "traces.jsonl"
    rows = [{"prompt": f"{i % 10} {i // 10}", "completion": "7777"} for i in range(32)]
    rows.insert(5, {"prompt": "1 2"})  # no completion: skipped and counted
    traces.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dict(
        cold_start__task="file",
        cold_start__path=str(traces),
        cold_start__steps=6,
        cold_start__batch_size=8,
        cold_start__lr=1e-2,
        cold_start__checkpoint_every=2,
        data__on_bad_row="skip",
        train__steps=1,
    )


def _config_file(tmp_path, run_name: str = "run", **extra) -> str:
    changes = dict(_sft_changes(tmp_path), **extra)
    return config_file(tmp_path, run_name, "c.data.eval_path = c.data.path", **changes)


def _r1jax(cfg: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "r1jax.cli", *args, f"--config={cfg}"],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu", **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_sft_command_resumes_then_eval_and_train_use_its_weights(tmp_path):
    # 1.5 epochs of 32 traces in batches of 8: 6 steps; held-out loss every 2 steps
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps({"prompt": f"{i} {i}", "completion": "7777"}) + "\n"
                                for i in range(6)))  # fmt: skip
    cfg = _config_file(tmp_path, cold_start__steps=0, cold_start__epochs=1.5,
                       cold_start__eval_path=str(held_out), cold_start__eval_every=2,
                       cold_start__eval_sampled=True, train__eval_prompts=8)  # fmt: skip
    run = tmp_path / "run"
    killed = _r1jax(cfg, "sft", **{KILL_ENV: "3"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert "cold_start.path: 1 bad rows of" in killed.stdout and "'completion': 1" in killed.stdout
    assert "SFT on 32 file traces, 1.5 epochs; held-out loss on 6 traces" in killed.stdout
    assert sorted(os.listdir(run / "sft" / "checkpoints")) == ["2"]

    done = _r1jax(cfg, "sft")
    assert done.returncode == 0, done.stderr
    assert f"resumed SFT from {run / 'sft' / 'checkpoints'} step 2" in done.stdout
    assert f"sft: step 6 in {run / 'sft' / 'checkpoints'}" in done.stdout
    assert ", held-out loss " in done.stdout
    rows = [json.loads(line) for line in open(run / "sft" / "metrics.jsonl")]
    # step 0 (before training) and 2 from the killed run, 4 and 6 from the resumed one
    assert [r["step"] for r in rows] == [0, 2, 4, 6] and rows[-1]["sft/loss"] > 0
    evals = [r["sft/eval_loss"] for r in rows]
    assert evals[-1] < 0.5 * evals[0], evals  # the held-out completions are learnt too
    assert all(r["sft/eval_tokens"] == 6 * 5 for r in rows)  # "7777" + EOS per trace
    assert all(0 <= r["sft/eval/pass@1"] <= 1 for r in rows)  # sampled eval, as GRPO's

    ev = _r1jax(cfg, "eval", "--nogreedy")
    assert ev.returncode == 0, ev.stderr
    assert f"weights: {run / 'sft'} step 6 (SFT stage)" in ev.stdout
    # the SFT's sampled eval at step 6 is r1jax eval of its step-6 checkpoint
    summary = json.load(open(run / "eval" / "sft_step_6.json"))
    assert summary["num_prompts"] == 8
    for name in ("pass@1", "pass@4", "maj@4", "length_mean"):
        assert rows[-1][f"sft/eval/{name}"] == pytest.approx(summary["metrics"][name]), name

    train = _r1jax(cfg, "train")
    assert train.returncode == 0, train.stderr
    assert f"resumed SFT from {run / 'sft' / 'checkpoints'} step 6" in train.stdout
    assert "done: step 1" in train.stdout
    assert sorted(os.listdir(run / "checkpoints")) == ["0", "1"]  # the SFT'd start, step 1


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(cold_start__task=""), "cold_start.task is empty: r1jax sft trains"),
        (dict(cold_start__task="file", cold_start__steps=2), "config.cold_start.path='': task"),
        (dict(cold_start__task="countdown", cold_start__steps=0), "cold_start.steps=0: a cold_"),
        (
            dict(cold_start__task="countdown", cold_start__steps=2, cold_start__epochs=1.0),
            r"cold_start.steps=2: a cold_start.task needs steps >= 1 or epochs > 0 \(one of",
        ),
        (
            dict(cold_start__task="countdown", cold_start__steps=2, cold_start__grad_accum=3),
            "cold_start.batch_size=64: must be a positive multiple of grad_accum=3",
        ),
        (
            dict(cold_start__task="countdown", cold_start__steps=2, cold_start__overlong="error"),
            "cold_start.overlong='error': one of truncate, drop",
        ),
        (dict(cold_start__task="csv", cold_start__steps=2), "cold_start.task='csv': one of"),
        (
            dict(cold_start__task="countdown", cold_start__steps=2, cold_start__eval_path="x"),
            "cold_start.eval_path='x': held-out trace files are for task 'file'",
        ),
        (
            dict(
                cold_start__task="file",
                cold_start__path="x",
                cold_start__steps=2,
                cold_start__eval_examples=5,
            ),  # fmt: skip
            "cold_start.eval_examples=5: synthetic held-out traces are for task 'countdown'",
        ),
        (
            dict(cold_start__task="countdown", cold_start__steps=2, cold_start__eval_every=-1),
            "cold_start.eval_every=-1: must be >= 0",
        ),
    ],
)
def test_sft_command_config_errors_name_the_field(tmp_path, changes, message):
    from r1jax.sft_command import sft_command

    with pytest.raises(ConfigError, match=message):
        sft_command(make_config(str(tmp_path), **changes), emit=lambda _: None)
    assert not os.path.exists(tmp_path / "run")


def test_lora_sft_on_an_init_checkpoint_resumes_on_that_base(tmp_path):
    """LoRA SFT from a full run (``train.init_checkpoint``): its checkpoints hold the
    adapters alone, so a resume loads the init checkpoint's base under them (before, a
    resume skipped it: the checkpoint held the base); then `r1jax eval`'s loading reads the
    same weights."""
    from r1jax import build
    from r1jax import sharding as shd
    from r1jax.model.lora import has_lora
    from r1jax.rl.trainer import train
    from r1jax.sft_command import sft_command

    train(make_config(str(tmp_path), "full", train__steps=1, optim__lr=5e-2))
    changes = dict(_sft_changes(tmp_path), lora__rank=4, cold_start__steps=2,
                   train__init_checkpoint=str(tmp_path / "full"))  # fmt: skip
    said: list[str] = []
    assert sft_command(make_config(str(tmp_path), **changes), emit=said.append) == 2
    assert any("sft: starting from" in line for line in said)
    c = make_config(str(tmp_path), **dict(changes, cold_start__steps=4))
    said.clear()
    assert sft_command(c, emit=said.append) == 4
    assert not any("sft: starting from" in line for line in said)
    mesh = shd.make_mesh((4, 2, 1))
    model, step, label = build.load_run_model(c, mesh, build.build_tokenizer(c))
    assert step == 4 and "(SFT stage)" in label and has_lora(nnx.state(model))
    full = build.load_run_model(make_config(str(tmp_path), "full"), mesh, build.build_tokenizer(c))[
        0
    ]
    np.testing.assert_array_equal(np.asarray(model.layers[0].mlp.up[...]),
                                  np.asarray(full.layers[0].mlp.up[...]))  # fmt: skip


def test_two_processes_run_the_sft_like_one(tmp_path):
    """`r1jax sft` on 2 processes x 4 CPU devices (each feeds its devices' rows of the same
    global batches; they checkpoint together) ends with the weights of 1 process x 8 devices,
    up to the rounding of the different collectives."""
    from r1jax import build
    from r1jax.run_weights import load_params
    from r1jax.sft_command import sft_command

    cfg = _config_file(tmp_path, "two")
    procs, logs = start_two_cli_processes(tmp_path, "sft", cfg)
    deadline = time.monotonic() + 240
    try:
        c = make_config(str(tmp_path), "one", **_sft_changes(tmp_path))
        sft_command(c, emit=lambda _: None)
    finally:
        wait_all(procs, logs, deadline)
    assert "sft: step 6 in" in open(logs[0]).read()
    assert sorted(os.listdir(tmp_path / "two" / "sft" / "checkpoints")) == ["4", "6"]

    template = nnx.state(build.build_model(c, build.build_mesh(c), build.build_tokenizer(c)))
    one = nnx.to_flat_state(load_params(str(tmp_path / "one"), template)[1])
    two = dict(nnx.to_flat_state(load_params(str(tmp_path / "two"), template)[1]))
    # AdamW amplifies the rounding differences of the collectives where a gradient is near 0
    # (test_multihost.py): measured 2.6e-3 x lr at most (one element of 75,008, on an AVX-512
    # EPYC; 99.99% under 8e-4 x lr); a wrong row or shard moves many elements by ~lr
    atol = 1e-2 * c.cold_start.lr
    for path, v in one:
        np.testing.assert_allclose(two[path].get_value(), v.get_value(), rtol=1e-5, atol=atol,
                                   err_msg=str(path))  # fmt: skip

    # traces of those weights: each process samples its share of every block of prompts, and
    # process 0 writes the file one process writes, byte for byte. Prompt i draws with id i
    # (Sampler.generate's draw_ids), so neither the blocks (6 prompts: shares of 3 padded to
    # the sampler's batch bucket, here; 4 on one process) nor the processes change a sample.
    args = ("--num_prompts=16", "--num_samples=2", "--keep=all", "--max_per_prompt=2",
            "--config.rl.prompts_per_step=6")  # fmt: skip
    dst = f"--dst={tmp_path / 'two.jsonl'}"
    procs, logs = start_two_cli_processes(tmp_path, "traces", cfg, dst, *args)
    deadline = time.monotonic() + 240
    try:
        from r1jax.traces_command import traces_command

        c = make_config(str(tmp_path), "two", **_sft_changes(tmp_path))
        assert c.rl.prompts_per_step == 4
        traces_command(c, str(tmp_path / "one.jsonl"), 16, 2, keep="all", max_per_prompt=2,
                       emit=lambda _: None)  # fmt: skip
    finally:
        wait_all(procs, logs, deadline)
    written = open(tmp_path / "one.jsonl").read()
    assert len(written.splitlines()) > 0 and open(tmp_path / "two.jsonl").read() == written

    # r1jax eval of those weights on two processes, blocks of 6 prompts gathered and kept by
    # process 0 (r1jax.eval_partial): the samples one process writes, no kept blocks left
    out = {n: tmp_path / f"eval_{n}" for n in ("one", "two")}
    procs, logs = start_two_cli_processes(tmp_path, "eval", cfg, f"--dst={out['two']}",
                                          "--nogreedy", "--num_prompts=10",
                                          "--config.rl.prompts_per_step=6")  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        from r1jax.eval_command import eval_command

        c.data.eval_path = c.data.path
        eval_command(c, num_prompts=10, greedy=False, out_dir=str(out["one"]), emit=lambda _: None)
    finally:
        wait_all(procs, logs, deadline)
    name = "sft_step_6_samples.jsonl"
    assert (out["two"] / name).read_text() == (out["one"] / name).read_text()
    assert sorted(os.listdir(out["two"])) == ["sft_step_6.json", name]


def test_sigterm_to_one_of_two_processes_stops_both_after_the_same_step(tmp_path):
    """A preemption notice that reaches one host of two: both processes finish the same
    step, save it together and exit with 143 (the job is unfinished), saying where."""
    import signal

    cfg = _config_file(tmp_path, "long", cold_start__steps=100_000)
    procs, logs = start_two_cli_processes(tmp_path, "sft", cfg)
    metrics = tmp_path / "long" / "sft" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text()):
            time.sleep(0.2)  # the first 10 steps are done
        procs[1].send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    said = [open(log).read() for log in logs]
    assert [p.returncode for p in procs] == [143, 143], said[0][-3000:] + said[1][-3000:]
    saved = tmp_path / "long" / "sft" / "checkpoints"
    last = max(int(s) for s in os.listdir(saved))
    assert last >= 10
    stopped = f"SFT stopped by SIGTERM at step {last}; saved step {last} to {saved}"
    for text in said:
        assert f"r1jax sft: {stopped}; the same command resumes" in text
    assert "SIGTERM: finishing this SFT step" in said[1] and "SIGTERM:" not in said[0]


def test_ctrl_c_during_r1jax_sft_saves_and_says_where(tmp_path):
    import signal

    changes = dict(_sft_changes(tmp_path), cold_start__steps=100_000)
    cfg = config_file(tmp_path, "long", **changes)
    proc = subprocess.Popen(
        [sys.executable, "-m", "r1jax.cli", "sft", f"--config={cfg}"],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "long" / "sft" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.2)  # the first 10 steps are done
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    last = max(int(s) for s in os.listdir(tmp_path / "long" / "sft" / "checkpoints"))
    assert 10 <= last < 100_000
    assert f"r1jax sft: interrupted (SFT interrupted at step {last}; saved step {last} to" in err


def test_cold_start_flushes_its_metrics_before_each_checkpoint(tmp_path, monkeypatch):
    """Each SFT checkpoint is saved after the metrics rows of its steps and a flush of the
    writer: in a bucket ``metrics.jsonl`` is an object rewritten on flush, and the steps a
    resume skips must already be in it."""
    from r1jax import build, recipes
    from r1jax.checkpoint import RunCheckpointer
    from r1jax.metrics import MetricsWriter

    events = []

    def record(cls, name, event):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            events.append(event(*args))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    record(MetricsWriter, "write", lambda step, row: ("row", step))
    record(MetricsWriter, "flush", lambda: ("flush", None))
    record(RunCheckpointer, "save", lambda step, *rest: ("save", step))
    c = make_config(tmp_path, **_sft_changes(tmp_path))  # 6 steps, checkpoints at 2, 4, 6
    c.cold_start.eval_path, c.cold_start.eval_every = c.cold_start.path, 4  # rows at 0, 4, 6
    mesh = build.build_mesh(c)
    tokenizer = build.build_tokenizer(c)
    recipes.cold_start(c, build.build_model(c, mesh, tokenizer), tokenizer, mesh)
    rows = [s for kind, s in events if kind == "row"]
    saves = [i for i, (kind, _) in enumerate(events) if kind == "save"]
    assert rows == [0, 4, 6] and [events[i][1] for i in saves] == [2, 4, 6]
    for i in saves:
        before = events[:i]
        assert [s for kind, s in before if kind == "row"] == [s for s in rows if s <= events[i][1]]
        assert before[-1] == ("flush", None)
