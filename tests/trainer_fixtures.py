"""Rewards and configs for trainer tests (importable by the scorer's worker processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from fast_compile import TEST_XLA_FLAGS

from r1jax.config import base_config

CHARS = "0123456789 +"


def sevens(completion: str, row: dict) -> float:
    """Fraction of the completion's characters that are '7' (an easily learnt task)."""
    return completion.count("7") / max(len(completion), 1)


def starts_with_seven(completion: str, row: dict) -> float:
    """1 when the completion starts with '7' (the accuracy of the tests' benchmark)."""
    return float(completion.startswith("7"))


def make_config(tmp_path, run_name: str = "run", **changes):
    """A tiny GRPO config on a JSONL prompt file, fast on CPU."""
    data = os.path.join(tmp_path, "prompts.jsonl")
    if not os.path.exists(data):
        with open(data, "w") as f:
            for i in range(64):
                f.write(json.dumps({"prompt": f"{i % 10} {i // 10}", "answer": "7"}) + "\n")
    c = base_config()
    c.run_dir = os.path.join(tmp_path, run_name)
    c.seed = 3
    c.model.preset = "tiny"
    c.model.overrides.max_position_embeddings = 64
    c.mesh.shape = (4, 2, 1)  # a char vocabulary (13) cannot split over a tensor axis
    c.tokenizer.chars = CHARS
    c.prompt.style = "plain"
    c.data.name = "jsonl"
    c.data.path = data
    c.sampling.max_prompt_len = 8
    c.sampling.prompt_buckets = (8,)
    c.sampling.max_new_tokens = 8
    c.rewards.functions = (("trainer_fixtures:sevens", 1.0),)
    c.rewards.num_workers = 1
    c.rl.prompts_per_step = 4
    c.rl.group_size = 4
    c.optim.lr = 3e-3
    c.train.steps = 6
    c.train.checkpoint_every = 2
    c.train.progress = False
    c.train.tensorboard = False
    for key, value in changes.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


def write_config_file(tmp_path, **changes) -> str:
    """A recipe file for `r1jax --config=...` whose get_config() is :func:`make_config` of
    ``tmp_path``, run "run", with ``changes`` (``section__field=value``, repr-able values)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    args = "".join(f", {k}={v!r}" for k, v in changes.items())
    path = os.path.join(tmp_path, "cfg.py")
    with open(path, "w") as f:
        f.write(
            f"import sys\nsys.path.insert(0, {tests!r})\nfrom trainer_fixtures import "
            f"make_config\ndef get_config():\n    return make_config({str(tmp_path)!r}, 'run'"
            f"{args})\n"
        )
    return path


def multihost_config(tmp_path, run_name: str = "run", **changes):
    """The run of tests/test_multihost.py: 8 devices (one process of 8, or two of 4), a
    one-layer tiny model, 8 prompts x 4 samples per step (the prompt batch fills the mesh, so
    the global rows are the same for 1 or 2 processes), and a greedy eval of 5 prompts every
    2 steps (3 + 2 per process: padded, uneven)."""
    opts = dict(
        rl__prompts_per_step=8,
        train__checkpoint_every=1,
        train__eval_every=2,
        train__eval_prompts=5,
        train__eval_temperature=0.0,
        rewards__correct_threshold=0.25,
    )
    c = make_config(tmp_path, run_name, **{**opts, **changes})
    c.data.eval_path = c.data.path  # eval prompts: the first training prompts
    c.mesh.shape = (1, 8, 1)  # FSDP over both processes: every parameter is split across them
    c.model.overrides.num_layers = 1
    rm_dir = os.path.join(tmp_path, "reward_model")
    if os.path.isdir(rm_dir):  # made by make_random_reward_model: a learned reward term too
        c.reward_model.path = rm_dir
        c.reward_model.weight = 0.5
    return c


def config_file(tmp_path, run_name: str = "run", extra: str = "", **changes) -> str:
    """A recipe file for ``r1jax <command> --config=<it>``: :func:`make_config` of
    ``tmp_path``, ``run_name`` and ``changes``, then the statement ``extra`` (on ``c``)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(str(tmp_path), f"{run_name}.py")
    with open(path, "w") as f:
        f.write(
            "import sys\n"
            f"sys.path.insert(0, {tests!r})\n"
            "from trainer_fixtures import make_config\n"
            "def get_config():\n"
            f"    c = make_config({str(tmp_path)!r}, {run_name!r}, **{changes!r})\n"
            f"    {extra or 'pass'}\n"
            "    return c\n"
        )
    return path


def rm_changes(root: str, steps: int) -> dict:
    """:func:`make_config` changes for a reward-model run (``r1jax rm``) of ``steps`` steps on
    ``root/pairs.jsonl``, scored on ``root/held_out.jsonl``."""
    return dict(
        reward_model__train_path=os.path.join(root, "pairs.jsonl"),
        reward_model__eval_path=os.path.join(root, "held_out.jsonl"),
        reward_model__steps=steps,
        reward_model__batch_size=16,
        reward_model__lr=3e-3,
        reward_model__checkpoint_every=0,
    )


def make_random_reward_model(path: str, seed: int = 0) -> str:
    """A random one-layer reward model over :data:`CHARS`, exported as a HF directory with
    its tokenizer (its score head scaled up so that scores differ visibly between rows)."""
    import numpy as np
    from flax import nnx

    from r1jax.model import ModelConfig, create_model
    from r1jax.model.hf import save_hf_model
    from r1jax.tokenizer import CharTokenizer

    tok = CharTokenizer(CHARS)
    cfg = ModelConfig(vocab_size=tok.vocab_size, num_layers=1, num_labels=1)
    model = create_model(cfg, seed=seed)
    model.score = nnx.Param(np.asarray(model.score[...]) * 50.0, logical_axes=("embed", None))
    os.makedirs(path, exist_ok=True)
    save_hf_model(model, path, pad_token_id=tok.pad_id)
    tok.save(path)
    return path


def multihost_trainer(tmp_path, run_name: str = "run", **changes):
    """``GRPOTrainer`` of :func:`multihost_config`."""
    from r1jax.rl.trainer import GRPOTrainer

    return GRPOTrainer(multihost_config(tmp_path, run_name, **changes))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_process_env(pid: int, port: int, cache_dir: str) -> dict[str, str]:
    """The environment of process ``pid`` of a 2-process x 4-CPU-device JAX run (gloo), as
    ``r1jax`` reads it; ``cache_dir``: a shared compilation cache (later phases reuse it)."""
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}",
        R1JAX_DISTRIBUTED="1",
        R1JAX_COORDINATOR=f"localhost:{port}",
        R1JAX_NUM_PROCESSES="2",
        R1JAX_PROCESS_ID=str(pid),
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )


def start_two_processes(tmp_path, argv: list[str], name: str = "process"):
    """``argv`` as 2 JAX processes x 4 CPU devices (:func:`two_process_env`), started in the
    checkout, each logging to ``tmp_path/<name><i>.log``; returns (processes, log paths) for
    :func:`wait_all`."""
    port = free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs, logs = [], []
    for pid in range(2):
        logs.append(str(tmp_path / f"{name}{pid}.log"))
        with open(logs[-1], "w") as log:
            env = two_process_env(pid, port, str(tmp_path / "jax_cache"))
            procs.append(
                subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    return procs, logs


def start_two_cli_processes(tmp_path, command: str, cfg: str, *args: str):
    """``r1jax <command> --config=<cfg> <args>`` by :func:`start_two_processes`."""
    argv = [sys.executable, "-m", "r1jax.cli", command, f"--config={cfg}", *args]
    return start_two_processes(tmp_path, argv, command)


def wait_all(procs, logs, deadline: float) -> None:
    """Waits for all processes; when one fails or time runs out, kills the others (which would
    sit in a collective until the distributed runtime's own, much longer, timeout) and fails
    the test with the end of the failed process's log."""
    import pytest

    try:
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    for p, path in zip(procs, logs, strict=True):
        if p.returncode != 0:
            with open(path) as f:
                lines = [x for x in f if "Gloo" not in x and "SPMD" not in x]
            pytest.fail(f"{path} exited with {p.returncode}:\n{''.join(lines[-60:])}")
