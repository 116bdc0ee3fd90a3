"""Multi-process GRPO: 2 JAX processes x 4 CPU devices (gloo collectives, parameters split
over both by FSDP) train exactly like 1 process x 8 devices, checkpoint together, resume and
export to a HF directory."""

import json
import os
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx
from trainer_fixtures import (
    config_file,
    make_config,
    make_random_reward_model,
    multihost_trainer,
    start_two_cli_processes,
    start_two_processes,
    wait_all,
)

from r1jax import sharding as shd
from r1jax.config import ConfigError, validate
from r1jax.data import PromptIterator

TESTS = os.path.dirname(__file__)
WORKER = os.path.join(TESTS, "multihost_worker.py")
VOLATILE = ("time/", "throughput/", "perf/")  # timings and what is computed from them
TIMEOUT_S = 240  # a hung collective fails the test instead of the suite


def _rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _assert_metrics_close(got: dict, want: dict, where: str) -> None:
    keys = {k for k in want if not k.startswith(VOLATILE)}
    assert keys == {k for k in got if not k.startswith(VOLATILE)}, where
    for k in sorted(keys):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{where} {k}")


def test_two_processes_train_like_one_and_resume(tmp_path):
    """Two processes run step 1, save, and a fresh trainer resumes and runs step 2 (with a
    greedy eval at steps 0 and 2 whose 5 prompts split 3 + 2); then checkpoint 2 is damaged,
    and a third trainer sets it aside, resumes from step 1 and runs step 2 again (every process
    reloads the checkpoint list after process 0 moved it); meanwhile one process of 8
    devices runs the same 2 steps here. Same global batch, same prompts in the same rows, so
    every reward, length and eval metric must agree and the parameters must match to float
    rounding (the collectives differ). A learned reward term runs too (a random reward model
    next to the rule reward): each process must get the scores of its own rows."""
    make_random_reward_model(str(tmp_path / "reward_model"))
    out = str(tmp_path / "out")
    argv = [sys.executable, WORKER, str(tmp_path), "two", out, "1", "2", "damage", "2"]
    procs, logs = start_two_processes(tmp_path, argv)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        reference = multihost_trainer(str(tmp_path), "one", train__steps=2)
        try:
            reference.train()
        finally:
            reference.close()
    finally:
        wait_all(procs, logs, deadline)

    with open(os.path.join(out, "history.json")) as f:
        phases = json.load(f)
    assert [(p["start"], len(p["history"])) for p in phases] == [(0, 1), (1, 1), (1, 1)]
    assert os.listdir(tmp_path / "two" / "checkpoints.damaged") == ["2"]

    one, two = _rows(str(tmp_path / "one")), _rows(str(tmp_path / "two"))
    assert [r["step"] for r in two] == [0, 1, 2]  # process 0 alone writes, once per step
    assert [r["step"] for r in one] == [0, 1, 2]
    for a, b in zip(two, one, strict=True):
        _assert_metrics_close(a, b, f"step {b['step']}")
    assert two[1]["reward/mean"] != two[2]["reward/mean"]  # the steps saw different samples
    assert one[1]["reward/fn/reward_model/std"] > 0.1  # the reward model's scores count

    flat = nnx.to_flat_state(reference.params)
    want = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in flat}
    got = np.load(os.path.join(out, "params.npz"))
    assert sorted(got.files) == sorted(want)
    # AdamW scales every element's step to about lr by m / sqrt(v), which amplifies the
    # rounding differences of the two runs' reduction orders wherever that ratio is sensitive
    # (small or sign-changing gradient elements): measured 2.95e-6 = 1e-3 lr, on 1 of 8,192
    # elements of one matrix. A wrong row or shard would be off by ~lr.
    atol = 2e-3 * reference.c.optim.lr
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=atol, err_msg=k)

    # The export of the two processes' model (gathered tensor by tensor, written by process 0)
    # is the export of the same parameters by one process.
    from safetensors.numpy import load_file

    from r1jax.model.hf import save_hf_model

    save_hf_model(nnx.merge(reference.graphdef, reference.params), str(tmp_path / "hf_one"))
    one, two = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("hf_one", "out/hf"))
    assert sorted(two) == sorted(one) and len(one) >= len(want)
    for name, v in one.items():
        np.testing.assert_allclose(two[name], v, rtol=1e-5, atol=atol, err_msg=name)
    assert json.load(open(tmp_path / "out" / "hf" / "config.json")) == json.load(
        open(tmp_path / "hf_one" / "config.json")
    )

    # The checkpoint holds each process's data-iterator state (process 0 writes the metadata).
    with open(tmp_path / "two" / "checkpoints" / "2" / "meta" / "metadata") as f:
        meta = json.load(f)
    states = meta["process_data_states"]
    assert [s["fingerprint"]["process_index"] for s in states] == [0, 1]
    assert {s["fingerprint"]["batch_size"] for s in states} == {4}


def test_process_batches_concatenate_to_the_global_batch():
    """Process p's batch k is block p of global batch k: concatenated in process order, the
    per-process batches are the batch one process reads, so global rows do not move."""
    source = [{"id": f"r{i}", "prompt": str(i), "answer": "0"} for i in range(40)]
    ids = lambda it: [[r["id"] for r in next(it)] for _ in range(3)]
    one = ids(PromptIterator(source, batch_size=6, seed=1))
    parts = [
        ids(PromptIterator(source, batch_size=2, seed=1, process_index=p, process_count=3))
        for p in range(3)
    ]
    assert [sum((parts[p][k] for p in range(3)), []) for k in range(3)] == one


def test_prompts_per_step_must_split_over_processes(tmp_path):
    c = make_config(str(tmp_path), rl__prompts_per_step=8)
    validate(c, 8, num_processes=2)
    with pytest.raises(ConfigError, match=r"prompts_per_step=8.*processes \(3\)"):
        validate(c, 8, num_processes=3)


def test_single_process_helpers_are_plain_transfers():
    assert jax.process_count() == 1
    mesh = shd.make_mesh((4, 2, 1))
    assert shd.process_batch_shard(mesh) == (0, 1) and not shd.spans_processes(mesh)
    x = np.arange(32, dtype=np.float32).reshape(8, 4)
    g = shd.host_to_global(x, shd.batch_sharding(mesh, 2))
    assert g.sharding == shd.batch_sharding(mesh, 2)
    np.testing.assert_array_equal(shd.global_to_host(g), x)
    f = shd.global_from_full(x, shd.batch_sharding(mesh, 2))
    np.testing.assert_array_equal(np.asarray(f), x)


def test_a_process_that_fails_alone_ends_both_at_once(tmp_path):
    """A data file missing on process 1 only: it prints the one-line error and exits 2 at
    once, and process 0, waiting for it in a collective, fails too; before, both sat in the
    distributed runtime's shutdown barrier for 5 minutes and then aborted (SIGABRT)."""
    import subprocess

    extra = ("import os; c.data.path = '/nonexistent/prompts.jsonl' if "
             "os.environ.get('R1JAX_PROCESS_ID') == '1' else c.data.path")  # fmt: skip
    cfg = config_file(str(tmp_path), "fails_alone", extra, train__steps=3)
    procs, logs = start_two_cli_processes(tmp_path, "train", cfg)
    start = time.monotonic()
    try:
        codes = [p.wait(timeout=150) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            p.kill()
    took = time.monotonic() - start
    said = open(logs[1]).read()
    assert codes is not None, f"still running after {took:.0f} s:\n{said[-2000:]}"
    assert codes[1] == 2 and codes[0] not in (0, -6), (codes, said[-2000:])
    assert "r1jax train: config.data.path: data file not found: /nonexistent/prompts.jsonl" in said


def test_a_checkpoint_one_process_cannot_read_is_skipped_by_both(tmp_path):
    """Process 1 alone fails to read step 2's metadata: both processes restore step 1 (each
    shard with step 1's values) and process 0 sets step 2 aside. Before, process 1 went on to
    step 1 while process 0 restored step 2, their Orbax barriers pairing off by one. And a
    LoRA checkpoint of adapters and a base fingerprint over both processes' shards."""
    argv = [sys.executable, os.path.join(TESTS, "multihost_ckpt_worker.py"),
            str(tmp_path / "checkpoints"), str(tmp_path)]  # fmt: skip
    procs, logs = start_two_processes(tmp_path, argv)
    wait_all(procs, logs, time.monotonic() + 120)
    for pid in range(2):
        got = json.load(open(tmp_path / f"restored{pid}.json"))
        assert got.pop("lora") == [5.0] * 4 and got.pop("base") == ["w"], pid  # (adapters)
        assert "this config's base differs" in got.pop("refused"), pid
        assert got == {"step": 1, "values": [1.0] * 4 + [10.0] * 4}, pid
    assert os.listdir(tmp_path / "checkpoints.damaged") == ["2"]
    assert "another process could not read its metadata" in open(logs[0]).read()


def test_a_shard_file_one_process_cannot_restore_fails_fast_then_is_skipped(tmp_path, monkeypatch):
    """Step 2's shard file of process 1 is damaged: only process 1's Orbax restore fails
    (process 0 waits for it inside the same restore, so neither can go on to step 1 alone).
    Process 1, without word from process 0 in time, records it and fails, and the job ends
    (before: a gloo collective mismatch, or a hang); the next start skips step 2 on both and
    restores step 1. Reading
    the run as `r1jax eval` does fails on process 1 with an error asking for a step."""
    worker = os.path.join(TESTS, "multihost_restore_worker.py")
    ck = tmp_path / "checkpoints"

    def run(phase: str, name: str) -> list[dict]:
        for pid in range(2):
            (tmp_path / f"restored{pid}.json").unlink(missing_ok=True)
        argv = [sys.executable, worker, phase, str(ck), str(tmp_path)]
        procs, logs = start_two_processes(tmp_path, argv, name)
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in procs:
            p.kill()
        read = [tmp_path / f"restored{pid}.json" for pid in range(2)]
        return [json.load(open(r)) if r.exists() else {} for r in read]

    run("save", "save")
    shard_files = list((ck / "2" / "params" / "ocdbt.process_1" / "d").iterdir())
    assert shard_files
    for f in shard_files:
        data = bytearray(f.read_bytes())
        data[len(data) // 2 :] = bytes(b ^ 0xFF for b in data[len(data) // 2 :])
        f.write_bytes(bytes(data))
    read = run("read", "read")  # (r1jax eval's reading: nothing recorded, an error)
    assert "cannot fall back to an older checkpoint alone: pass --step=" in read[1]["error"]
    assert not os.path.exists(tmp_path / "checkpoints.unrestorable")
    monkeypatch.setenv("R1JAX_RESTORE_AGREEMENT_S", "10")  # (process 0 never reports)
    first = run("restore", "first")
    monkeypatch.delenv("R1JAX_RESTORE_AGREEMENT_S")
    assert "process 1 could not restore checkpoint" in first[1]["error"], first
    assert "skips this checkpoint on every process at the next start" in first[1]["error"]
    # process 0 waited inside the restore and fails once process 1 is gone, recording
    # nothing against the checkpoint (a peer's crash does not damage it)
    assert "error" in first[0], first
    assert os.listdir(tmp_path / "checkpoints.unrestorable") == ["2.process1"]
    again = run("restore", "again")
    assert again == [{"step": 1, "values": [1.0] * 4}] * 2, again
    assert os.listdir(tmp_path / "checkpoints.damaged") == ["2"]
    assert os.listdir(tmp_path / "checkpoints.unrestorable") == []


def test_sample_and_plot_on_two_processes_print_and_write_once(tmp_path):
    """`r1jax sample` on 2 processes prints the completions once (process 0), the ones one
    process samples (each process sampled and printed its own draws of the prompts), and
    `r1jax plot` draws the files once."""
    from r1jax.sampling.command import sample_command

    cfg = config_file(str(tmp_path), "sampled", "c.sampling.temperature = 1.0")
    procs, logs = start_two_cli_processes(tmp_path, "sample", cfg, "--prompt=3 4",
                                          "--prompt=5 6", "--num_samples=2")  # fmt: skip
    wait_all(procs, logs, time.monotonic() + 240)
    lines: list[str] = []
    sample_command(make_config(str(tmp_path), "sampled", sampling__temperature=1.0),
                   ["3 4", "5 6"], 2, emit=lines.append)  # fmt: skip
    printed = [open(p).read() for p in logs]
    assert "--- prompt" not in printed[1]
    assert all(line in printed[0] for line in lines[1:]) and printed[0].count("--- prompt") == 4

    run = tmp_path / "plotted"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "reward/mean": 0.1 * s}) + "\n" for s in range(1, 4)))  # fmt: skip
    procs, logs = start_two_processes(
        tmp_path, [sys.executable, "-m", "r1jax.cli", "plot", str(run)], "plot"
    )
    wait_all(procs, logs, time.monotonic() + 120)
    assert "reward.png" in open(logs[0]).read() and "png" not in open(logs[1]).read()
