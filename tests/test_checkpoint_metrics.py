"""Run checkpoints (retention, partial saves), metrics files, plots and HF export."""

import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from trainer_fixtures import make_config, write_config_file

from r1jax import sharding as shd
from r1jax.build import build_tokenizer
from r1jax.checkpoint import CheckpointError, RunCheckpointer
from r1jax.metrics import MetricsWriter, plot_run, read_metrics
from r1jax.model import create_model, get_preset
from r1jax.optim import init_opt_state, make_optimizer
from r1jax.run_weights import load_params, saved_steps

ROOT = os.path.dirname(os.path.dirname(__file__))


def _state(mesh):
    params = nnx.state(create_model(get_preset("tiny"), mesh))
    opt = make_optimizer(1e-3, 10)
    return params, init_opt_state(opt, params, mesh)


def test_keeps_last_n_plus_best(tmp_path):
    mesh = shd.make_mesh((2, 2, 2))
    params, opt_state = _state(mesh)
    ck = RunCheckpointer(str(tmp_path / "ck"), keep=2)
    scores = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.3, 5: None, 6: None}
    for step, score in scores.items():
        ck.save(step, params, opt_state, {"step": step}, eval_score=score)
        ck.wait()
    assert ck.steps() == [2, 5, 6]  # last two plus the best by eval
    # a step saved (or being saved) again is left alone: Ctrl-C right after a periodic save
    ck.save(7, params, opt_state, {"step": 7})
    ck.save(7, params, opt_state, {"step": 7}, force=True)  # while 7 is still being written
    ck.wait()
    ck.save(7, params, opt_state, {"step": 7}, force=True)
    again = RunCheckpointer(str(tmp_path / "ck"), keep=2)
    again.save(7, params, opt_state, {"step": "other"}, force=True)  # another process's view
    again.close()
    assert ck.steps() == [2, 6, 7] and ck.read_meta(7)["step"] == 7
    step, p2, o2, ref, meta = ck.restore_latest(params, opt_state)
    assert step == 7 and meta["step"] == 7 and ref is None
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.sharding == b.sharding  # restored directly onto the mesh
    ck.close()


def test_the_best_checkpoint_survives_a_restart(tmp_path, caplog):
    """A resumed run (a new RunCheckpointer on the directory) still knows which step scored
    best: Orbax kept the scores in memory only, and the first save after a restart deleted
    the best checkpoint. Saves without a score log nothing."""
    mesh = shd.make_mesh((2, 2, 2))
    params, opt_state = _state(mesh)
    directory = str(tmp_path / "ck")
    scores = {1: 0.9, 2: 0.1, 3: None, 4: 0.3, 5: float("nan"), 6: 0.95, 7: None, 8: None}
    kept = {3: [1, 2, 3], 4: [1, 3, 4], 5: [1, 4, 5], 6: [5, 6], 7: [6, 7], 8: [6, 7, 8]}
    for step, score in scores.items():  # a restart before every save
        ck = RunCheckpointer(directory, keep=2)
        ck.save(step, params, opt_state, {"step": step}, eval_score=score)
        ck.close()
        assert step < 3 or ck.steps() == kept[step], step
    assert "metrics" not in caplog.text


def test_half_written_checkpoint_is_ignored(tmp_path, caplog):
    mesh = shd.make_mesh((8, 1, 1))
    params, opt_state = _state(mesh)
    ck = RunCheckpointer(str(tmp_path / "ck"))
    ck.save(3, params, opt_state, {"step": 3})
    ck.close()
    os.makedirs(tmp_path / "ck" / "7.orbax-checkpoint-tmp" / "params")  # an interrupted save
    with caplog.at_level(logging.WARNING):
        ck = RunCheckpointer(str(tmp_path / "ck"))
    assert "half-written" in caplog.text
    assert ck.restore_latest(params, opt_state)[0] == 3
    ck.close()


def _truncate_files(directory):
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(0)


def test_a_different_model_is_named_and_nothing_is_deleted(tmp_path):
    mesh = shd.make_mesh((8, 1, 1))
    params, opt_state = _state(mesh)
    ck = RunCheckpointer(str(tmp_path / "ck"), keep=1)
    ck.save(3, params, opt_state, {"step": 3})
    ck.close()
    wider = nnx.state(create_model(get_preset("tiny").replace(hidden_size=128), mesh))
    ck = RunCheckpointer(str(tmp_path / "ck"), keep=1)
    with pytest.raises(CheckpointError, match=r"embed: saved \(256, 64\), now \(256, 128\)"):
        ck.restore_latest(wider, opt_state)
    with pytest.raises(CheckpointError, match="different model"):
        ck.restore_params(wider)
    assert ck.steps() == [3] and ck.restore_latest(params, opt_state)[0] == 3
    ck.close()


def _saved_steps_2_and_4(directory):
    """Checkpoints of steps 2 and 4 of the tiny model in ``directory``; returns the state."""
    params, opt_state = _state(shd.make_mesh((8, 1, 1)))
    ck = RunCheckpointer(str(directory))
    for step in (2, 4):
        ck.save(step, params, opt_state, {"step": step})
        ck.wait()
    ck.close()
    return params, opt_state


def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    params, opt_state = _saved_steps_2_and_4(tmp_path / "ck")
    for step in (2, 4):
        _truncate_files(tmp_path / "ck" / str(step) / "params")
    ck = RunCheckpointer(str(tmp_path / "ck"))
    with pytest.raises(CheckpointError, match=r"steps \[2, 4\] and none could be restored"):
        ck.restore_latest(params, opt_state)
    assert ck.steps() == [2, 4]
    ck.close()


def test_checkpoints_without_saved_shapes_still_restore(tmp_path):
    """Checkpoints written before the metadata held parameter shapes."""
    mesh = shd.make_mesh((8, 1, 1))
    params, opt_state = _state(mesh)
    ck = RunCheckpointer(str(tmp_path / "ck"))
    ck.save(1, params, opt_state, {"step": 1})
    ck.close()
    meta_file = tmp_path / "ck" / "1" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert "param_shapes" in meta
    del meta["param_shapes"]
    meta_file.write_text(json.dumps(meta))
    ck = RunCheckpointer(str(tmp_path / "ck"))
    assert "param_shapes" not in ck.read_meta(1)
    assert ck.restore_latest(params, opt_state)[0] == 1
    ck.close()


def test_metrics_resume_truncates_and_plots(tmp_path):
    w = MetricsWriter(str(tmp_path), tensorboard=True)
    for step in range(1, 6):
        w.write(
            step,
            {
                "reward/mean": step / 10,
                "reward/fn/countdown/mean": step / 20,
                "completion/length_mean": 10.0 + step,
                "loss/kl": 0.01 * step,
                "eval/pass@1": 0.5,
                "bad": float("nan"),
            },
        )
    w.close()
    w = MetricsWriter(str(tmp_path), resume_step=3, tensorboard=False)  # resumed at step 3
    w.write(4, {"reward/mean": 0.44})
    w.close()
    rows = read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["reward/mean"] == 0.44
    assert rows[0]["bad"] == "nan"
    paths = plot_run(str(tmp_path))
    assert {os.path.basename(p) for p in paths} == {
        "reward.png",
        "accuracy.png",
        "length.png",
        "kl.png",
    }
    assert all(os.path.getsize(p) > 1000 for p in paths)
    with pytest.raises(FileNotFoundError, match="no metrics found"):
        read_metrics(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no metrics found"):
        plot_run(str(tmp_path / "nope"))
    # the SFT stage's metrics (<run_dir>/sft), alone (r1jax sft) or next to GRPO's
    w = MetricsWriter(str(tmp_path / "sft_only" / "sft"), tensorboard=False)
    w.write(0, {"sft/eval_loss": 2.0, "sft/eval_accuracy": 0.1})
    w.write(5, {"sft/loss": 1.0, "sft/accuracy": 0.5, "sft/eval_loss": 1.1})
    w.close()
    paths = plot_run(str(tmp_path / "sft_only"))
    assert [os.path.basename(p) for p in paths] == ["sft_loss.png", "sft_accuracy.png"]
    os.rename(tmp_path / "sft_only" / "sft", tmp_path / "sft")
    assert len(plot_run(str(tmp_path))) == 6


def test_train_then_export_to_transformers(tmp_path):
    """`r1jax train`, then `export`: transformers loads the checkpoint, same logits. (The
    `eval` and `traces` commands run on trained weights in tests/test_sft_command.py.)"""
    import torch
    import transformers

    cfg_file = write_config_file(tmp_path, train__steps=2)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for args in (["train"], ["export", f"--dst={tmp_path / 'hf'}"]):
        r = subprocess.run(
            [sys.executable, "-m", "r1jax.cli", *args, f"--config={cfg_file}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    assert "run step 2 to" in r.stdout and " in float32 " in r.stdout  # model.dtype's
    # the run's character vocabulary goes along as HF files, its ids in config.json
    assert "tokenizer files: tokenizer.json, tokenizer_config.json" in r.stdout
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert config["model_type"] == "qwen2"
    # (not AutoTokenizer: transformers >= 5 swaps in Qwen2's BPE for any qwen2 config)
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "hf"))
    ours_tok = build_tokenizer(make_config(str(tmp_path), "run"))  # chars "0123456789 +"
    text = "12 + 7 <eos>"
    assert tok(text)["input_ids"] == ours_tok.encode(text)
    ids = (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"])
    assert ids == (ours_tok.bos_id, ours_tok.eos_id, ours_tok.pad_id) == (1, 2, 0)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    from r1jax.model.hf import load_hf_model

    ours = load_hf_model(str(tmp_path / "hf"))
    ids = np.array([[1, 2, 3, 4, 5]])
    import jax.numpy as jnp

    from r1jax.model import causal_mask, positions_from_mask

    mask = jnp.ones_like(jnp.asarray(ids), bool)
    logits = np.asarray(ours(jnp.asarray(ids), positions_from_mask(mask), causal_mask(mask))[0])
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)
    # and the exported weights are the trained ones, not a fresh init
    init = create_model(ours.cfg, seed=3)
    assert np.abs(np.asarray(init.embed[...]) - np.asarray(ours.embed[...])).max() > 0
    # a run computing in bfloat16 exports bfloat16 weights (its float32 master weights rounded)
    r = subprocess.run(
        [sys.executable, "-m", "r1jax.cli", "export", f"--dst={tmp_path / 'hf16'}",
         f"--config={cfg_file}", "--config.model.dtype=bfloat16"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.load(open(tmp_path / "hf16" / "config.json"))["dtype"] == "bfloat16"
    half = load_hf_model(str(tmp_path / "hf16"))
    np.testing.assert_array_equal(
        np.asarray(half.embed[...]), np.asarray(ours.embed[...].astype(jnp.bfloat16), np.float32)
    )


def test_wandb_logs_when_installed_and_warns_when_not(tmp_path, monkeypatch, caplog):
    import types

    logged, inits = [], []
    run = types.SimpleNamespace(
        log=lambda row, step: logged.append((step, row)), finish=lambda: logged.append("end")
    )
    fake = types.SimpleNamespace(init=lambda **kw: inits.append(kw) or run)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    w = MetricsWriter(str(tmp_path / "a"), tensorboard=False, wandb_project="p",
                      wandb_config={"rl": {"beta": 0.0}})  # fmt: skip
    w.write(1, {"reward/mean": 0.5})
    w.close()
    assert logged[0][0] == 1 and logged[0][1]["reward/mean"] == 0.5 and logged[-1] == "end"
    # a resumed run (a new writer on the same run_dir) continues the same W&B run
    MetricsWriter(str(tmp_path / "a"), resume_step=1, tensorboard=False, wandb_project="p")
    MetricsWriter(str(tmp_path / "c"), tensorboard=False, wandb_project="p")  # another run
    first, resumed, other = inits
    assert first["id"] == resumed["id"] != other["id"] and len(first["id"]) == 8
    assert (first["project"], first["resume"], first["name"]) == ("p", "allow", "a")
    assert first["config"] == {"rl": {"beta": 0.0}} and first["dir"] == str(tmp_path / "a")
    assert open(tmp_path / "a" / "wandb_run_id").read() == first["id"] + "\n"
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with caplog.at_level(logging.WARNING):
        w = MetricsWriter(str(tmp_path / "b"), tensorboard=False, wandb_project="p")
    w.write(1, {"reward/mean": 0.5})
    w.close()
    assert "wandb is not installed" in caplog.text
    assert read_metrics(str(tmp_path / "b"))[0]["reward/mean"] == 0.5


def test_damaged_newest_checkpoint_set_aside_and_readers_fall_back(tmp_path, caplog):
    """A damaged newest checkpoint: read-only commands fall back to the one before (or name
    the asked-for step as unreadable); a resume moves it to ``<dir>.damaged/`` (kept) and
    then saves that step again. Read-only commands leave a save in progress alone."""
    params, opt_state = _saved_steps_2_and_4(tmp_path / "ck")
    _truncate_files(tmp_path / "ck" / "4" / "params")
    in_progress = tmp_path / "ck" / "6.orbax-checkpoint-tmp-1764300000"
    os.makedirs(in_progress / "params")  # another process is saving step 6
    with caplog.at_level(logging.WARNING):
        assert load_params(str(tmp_path / "ck"), params)[0] == 2
    assert "checkpoint" in caplog.text and "step 4" in caplog.text
    with pytest.raises(CheckpointError, match=r"cannot read the checkpoint of step\(s\) \[4\]"):
        load_params(str(tmp_path / "ck"), params, step=4)
    assert saved_steps(str(tmp_path / "ck")) == [2, 4] and in_progress.is_dir()
    ck = RunCheckpointer(str(tmp_path / "ck"))  # a resume
    assert ck.restore_latest(params, opt_state)[0] == 2
    assert ck.steps() == [2] and os.listdir(tmp_path / "ck.damaged") == ["4"]
    newer = jax.tree.map(lambda x: x + 1, params)
    ck.save(4, newer, opt_state, {"step": 4})  # the resumed run reaches step 4 again
    ck.close()
    step, back = load_params(str(tmp_path / "ck"), params)
    assert step == 4
    for (_, a), (_, b) in zip(nnx.to_flat_state(back), nnx.to_flat_state(newer), strict=True):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()))


def test_a_metrics_line_cut_short_by_a_crash_is_left_out(tmp_path, caplog):
    w = MetricsWriter(str(tmp_path), tensorboard=False)
    for step in (1, 2, 3):
        w.write(step, {"reward/mean": 0.1 * step})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "reward/me')  # kill -9 in the middle of a write
    with caplog.at_level(logging.WARNING):
        assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3]
    assert "left out line(s) [4]" in caplog.text
    w = MetricsWriter(str(tmp_path), resume_step=3, tensorboard=False)  # the resume
    w.write(4, {"reward/mean": 0.4})
    w.close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3, 4]
    assert len(plot_run(str(tmp_path))) == 1


def test_without_a_resume_step_the_first_row_rewinds_the_file(tmp_path):
    """A run that died before its first checkpoint, started again, writes its step-0 row
    once (the old writer kept rows <= 0, so the file had two); a loop that learns only as it
    starts which step it restored (SFT, reward model: the newest checkpoint may be damaged)
    drops the rows from its first one on."""
    w = MetricsWriter(str(tmp_path), tensorboard=True)
    for step in (0, 1, 2):
        w.write(step, {"loss": float(step)})
    w.close()  # no checkpoint: the next run starts afresh
    w = MetricsWriter(str(tmp_path), tensorboard=True)
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [0, 1, 2]  # until it writes
    w.write(0, {"loss": 9.0})
    w.write(1, {"loss": 8.0})
    w.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(0, 9.0), (1, 8.0)]
    w = MetricsWriter(str(tmp_path), tensorboard=False)  # resumed at step 0, logs step 1 next
    w.close()  # nothing written (e.g. the stage had finished): the file is left as it was
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [0, 1]
    w = MetricsWriter(str(tmp_path), tensorboard=False)
    w.write(1, {"loss": 7.0})
    w.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(0, 9.0), (1, 7.0)]


def test_a_damaged_checkpoint_that_cannot_be_moved_stops_the_resume(tmp_path, monkeypatch):
    """Where the damaged checkpoint cannot be set aside (say, a store that cannot move
    folders), the resume stops and says so, rather than training on and never saving it."""
    from etils.epath.gpath import PosixGPath

    params, opt_state = _saved_steps_2_and_4(tmp_path / "ck")
    _truncate_files(tmp_path / "ck" / "4" / "params")

    def refuse(self, target):
        raise OSError("moving folders is not supported here")

    monkeypatch.setattr(PosixGPath, "rename", refuse)
    ck = RunCheckpointer(str(tmp_path / "ck"))
    with pytest.raises(CheckpointError, match=r"ck/4 could not be moved to .*ck.damaged/4 "
                       r"\(moving folders is not supported here\): it is damaged"):  # fmt: skip
        ck.restore_latest(params, opt_state)
    ck.close()
    assert sorted(os.listdir(tmp_path / "ck")) == ["2", "4"]  # nothing lost
