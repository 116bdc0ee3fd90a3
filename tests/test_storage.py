"""A run directory, a model and data files in a ``gs://`` bucket (tests/fake_gcs.py keeps the
bucket in a local folder): everything r1jax writes or reads there goes to the bucket, and
nothing lands in a local folder named ``gs:``."""

import json
import os

import jax
import numpy as np
import pytest
from fake_gcs import fake_gcs
from flax import nnx

from r1jax import storage
from r1jax.data.files import expand_paths, iter_rows
from r1jax.data.records import BadRows
from r1jax.eval_command import _write
from r1jax.metrics import MetricsWriter, plot_run, read_metrics
from r1jax.model.hf import load_hf_model, save_hf_model
from r1jax.run_weights import checkpoint_dir
from r1jax.traces_command import _Progress


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """``gs://b/...`` is ``<tmp>/gcs/b/...``; the working directory is empty, the local cache
    is ``<tmp>/cache``; after the test no ``gs:`` folder may exist in either."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    with fake_gcs(str(tmp_path / "gcs")) as root:
        yield root
    leaked = [d for d, dirs, _ in os.walk(tmp_path) for x in dirs if x.startswith("gs:")]
    assert not leaked, f"local folders named like a bucket: {leaked}"


def test_helpers_read_write_append_list_and_glob_in_a_bucket(bucket):
    storage.makedirs("gs://b/run/data")
    storage.append_text("gs://b/run/log.txt", "a\n")
    storage.append_text("gs://b/run/log.txt", "b\n")
    storage.write_text("gs://b/run/data/1.jsonl", "{}\n")
    storage.write_text("gs://b/run/data/2.jsonl", "{}\n")
    assert open(os.path.join(bucket, "b/run/log.txt")).read() == "a\nb\n"
    assert storage.listdir("gs://b/run") == ["data", "log.txt"]
    assert storage.listdir("gs://b/nothing") == []
    assert storage.isdir("gs://b/run") and storage.isfile("gs://b/run/log.txt")
    assert not storage.isfile("gs://b/run/data")
    want = ["gs://b/run/data/1.jsonl", "gs://b/run/data/2.jsonl"]
    assert storage.glob("gs://b/run/data/*.jsonl") == want
    assert storage.glob("gs://b/*/data/?.jsonl") == want
    assert storage.glob("gs://b/run/data/1.jsonl") == want[:1]  # no pattern: the path itself
    assert storage.glob("gs://b/run/data/3.jsonl") == []
    assert storage.absolute("gs://b/run") == "gs://b/run"


def test_local_copy_fetches_matching_files_once(bucket, caplog):
    storage.makedirs("gs://b/hf/original")
    for name, text in (("config.json", "{}"), ("model.safetensors", "w" * 100), ("x.bin", "")):
        storage.write_text(f"gs://b/hf/{name}", text)
    local = storage.local_copy("gs://b/hf", ("config.json", "*.safetensors"))
    assert sorted(os.listdir(local)) == ["config.json", "model.safetensors"]
    assert open(os.path.join(local, "model.safetensors")).read() == "w" * 100
    assert local.startswith(os.environ[storage.CACHE_ENV])
    caplog.clear()
    assert storage.local_copy("gs://b/hf", ("config.json", "*.safetensors")) == local
    assert "copying" not in caplog.text  # same sizes: nothing copied again
    storage.write_text("gs://b/hf/config.json", '{"changed": 1}')
    storage.local_copy("gs://b/hf", ("config.json",))
    assert json.load(open(os.path.join(local, "config.json"))) == {"changed": 1}
    storage.write_text("gs://b/hf/config.json", '{"changed": 2}')  # same size, newer
    in_bucket = os.path.join(bucket, "b/hf/config.json")
    os.utime(in_bucket, (os.stat(in_bucket).st_mtime + 10,) * 2)
    storage.local_copy("gs://b/hf", ("config.json",))
    assert json.load(open(os.path.join(local, "config.json"))) == {"changed": 2}
    assert not [n for n in os.listdir(local) if ".partial" in n]
    one = storage.local_copy("gs://b/hf/x.bin")
    assert os.path.basename(one) == "x.bin" and os.path.isfile(one)
    assert storage.local_copy("relative/dir") == "relative/dir"  # local paths as they are
    with pytest.raises(FileNotFoundError, match="gs://b/missing does not exist"):
        storage.local_copy("gs://b/missing")


def test_metrics_in_a_bucket_upload_on_flush_and_resume_truncated(bucket, monkeypatch):
    monkeypatch.setattr(MetricsWriter, "UPLOAD_EVERY_S", 1e9)
    w = MetricsWriter("gs://b/run", tensorboard=False)
    for step in (1, 2, 3):
        w.write(step, {"reward/mean": 0.1 * step, "eval/pass@1": float(step)})
    assert read_metrics("gs://b/run") == []  # not uploaded yet (an object store cannot append)
    w.flush()
    assert [r["step"] for r in read_metrics("gs://b/run")] == [1, 2, 3]
    w.write(4, {"reward/mean": 0.4})
    w.close()
    assert [r["step"] for r in read_metrics("gs://b/run")] == [1, 2, 3, 4]
    w = MetricsWriter("gs://b/run", resume_step=2, tensorboard=False)  # resumed from step 2
    assert [r["step"] for r in read_metrics("gs://b/run")] == [1, 2]
    monkeypatch.setattr(MetricsWriter, "UPLOAD_EVERY_S", 0.0)
    w.write(3, {"reward/mean": 0.9})  # uploaded at once
    assert read_metrics("gs://b/run")[-1] == {"step": 3, "reward/mean": 0.9}
    w.close()
    paths = plot_run("gs://b/run")
    assert paths == ["gs://b/run/plots/reward.png", "gs://b/run/plots/accuracy.png"]
    assert open(os.path.join(bucket, "b/run/plots/reward.png"), "rb").read(4) == b"\x89PNG"


def test_tensorboard_in_a_bucket_needs_its_package(bucket):
    storage.check_remote_paths({"config.run_dir": "gs://b/run"})  # the fake bucket is reachable
    if storage._importable("google.cloud.storage"):
        pytest.skip("google-cloud-storage is installed: the check passes")
    with pytest.raises(ValueError, match=r"TensorBoard files there need google-cloud-storage"):
        storage.check_remote_paths({}, "gs://b/run/tb")
    with pytest.raises(ValueError, match=r"config.run_dir='s9://b': unknown scheme"):
        storage.check_remote_paths({"config.run_dir": "s9://b"})


def test_hf_model_exported_to_and_loaded_from_a_bucket(bucket, hf_dirs):
    model = load_hf_model(hf_dirs["qwen2"])
    save_hf_model(model, "gs://b/export", max_shard_bytes=20_000)  # sharded, with an index
    names = storage.listdir("gs://b/export")
    assert "config.json" in names and "model.safetensors.index.json" in names
    assert sum(n.endswith(".safetensors") for n in names) > 1
    back = load_hf_model("gs://b/export")
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model)),
                                 nnx.to_flat_state(nnx.state(back)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(jax.device_get(a.get_value()),
                                      jax.device_get(b.get_value()), err_msg=str(path))  # fmt: skip


def test_eval_results_and_traces_written_to_a_bucket(bucket):
    class Set:
        name, title, records = "", "held_out", [{"prompt": "p"}]

    paths = _write("gs://b/run/eval", "step_4", {"pass@1": 0.5}, [Set()],
                   {"held_out": {"sampled": [{"text": "t"}]}})  # fmt: skip
    assert paths == ["gs://b/run/eval/step_4.json", "gs://b/run/eval/step_4_samples.jsonl"]
    assert json.loads(storage.read_text(paths[0])) == {"pass@1": 0.5}
    settings = {"keep": "all"}
    progress = _Progress("gs://b/traces.jsonl", settings, write=True)
    progress.add([{"a": 1}], 1, {"kept": 1, **{k: 0 for k in progress.counts if k != "kept"}})
    resumed = _Progress("gs://b/traces.jsonl", settings, write=True)  # a restarted job
    assert resumed.done == 1
    resumed.add([{"a": 2}], 2, {k: 1 if k == "kept" else 0 for k in resumed.counts})
    resumed.finish()
    assert storage.listdir("gs://b") == ["run", "traces.jsonl"]
    assert storage.read_text("gs://b/traces.jsonl") == '{"a": 1}\n{"a": 2}\n'


def test_data_files_and_checkpoint_folders_found_in_a_bucket(bucket):
    storage.makedirs("gs://b/data")
    storage.write_text("gs://b/data/train-0.jsonl", '{"q": 1}\n\n{"q": 2}\n')
    storage.write_text("gs://b/data/train-1.jsonl", '{"q": 3}\n')
    files = expand_paths("gs://b/data/train-*.jsonl")
    assert files == ["gs://b/data/train-0.jsonl", "gs://b/data/train-1.jsonl"]
    rows = [row for f in files for _, row in iter_rows(f, BadRows("fail"))]
    assert rows == [{"q": 1}, {"q": 2}, {"q": 3}]
    with pytest.raises(FileNotFoundError, match="gs://b/data/nothing-"):
        expand_paths("gs://b/data/nothing-*.jsonl")
    storage.makedirs("gs://b/run/sft/checkpoints/20")
    assert checkpoint_dir("gs://b/run") == "gs://b/run/sft/checkpoints"
    storage.makedirs("gs://b/run/checkpoints/4")
    assert checkpoint_dir("gs://b/run") == "gs://b/run/checkpoints"
