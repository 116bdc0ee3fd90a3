"""Eval sets: the held-out split and ``train.eval_benchmarks`` (loading, names, errors)."""

from __future__ import annotations

import json

import pytest
from trainer_fixtures import make_config

from r1jax import build
from r1jax.config import ConfigError, validate
from r1jax.eval_sets import (
    add_benchmarks,
    benchmarks,
    best_metric,
    eval_seed,
    load_eval_sets,
    metric_names,
    parse_benchmark,
)
from r1jax.metrics import _extra_curves


def _config(tmp_path, **benchmarks):
    c = make_config(str(tmp_path))
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"q": f"{i} 9", "a": "7"}) + "\n" for i in range(6)))
    for name, spec in benchmarks.items():
        c.train.eval_benchmarks[name] = dict(
            dict(name="jsonl", path=str(bench), field_map=dict(prompt="q", answer="a")), **spec
        )
    return c


def _load(c, **kwargs):
    return load_eval_sets(c, build.build_tokenizer(c), "r1jax eval", **kwargs)


def test_benchmarks_load_next_to_the_held_out_split(tmp_path):
    c = _config(tmp_path, small=dict(prompts=2, samples=3), own=dict(accuracy="countdown"))
    c.data.eval_path = c.data.path
    c.train.eval_prompts = 4
    held_out, own, small = _load(c)  # the benchmarks by name
    assert (held_out.name, held_out.prefix, held_out.title) == ("", "eval/", "held_out")
    assert [r["prompt"] for r in held_out.records] == ["0 0", "1 0", "2 0", "3 0"]
    assert held_out.task.accuracy == "trainer_fixtures:sevens" and held_out.accuracy is None
    assert (small.prefix, small.samples) == ("eval/small/", 3)
    assert small.data == str(tmp_path / "bench.jsonl")
    assert [r["text"] for r in small.records] == ["0 9", "1 9"]  # the run's (plain) template
    run_task = (held_out.task.accuracy, held_out.task.threshold)
    assert (small.task.accuracy, small.task.threshold) == run_task  # no accuracy of its own
    assert len(own.records) == 6 and own.samples == c.train.eval_samples  # 0 prompts: all
    assert own.task.accuracy == "countdown" and own.accuracy == "countdown"
    # --num_prompts applies to every set; --sets picks some
    assert [len(s.records) for s in _load(c, num_prompts=1)] == [1, 1, 1]
    assert [s.title for s in _load(c, only=["own", "held_out"])] == ["held_out", "own"]
    with pytest.raises(ConfigError, match=r"eval sets \['nope'\] are not in this config; it has "
                       r"\['held_out', 'own', 'small'\]"):  # fmt: skip
        _load(c, only=["nope"])
    # metric names, and the one that picks the best checkpoint
    assert metric_names(small) == ["eval/small/pass@1", "eval/small/pass@3", "eval/small/maj@3",
                                   "eval/small/length_mean", "eval/small/truncated"]  # fmt: skip
    sets = [held_out, own, small]
    assert best_metric(c, sets) == "eval/pass@1"
    assert best_metric(c, [own, small]) == "eval/own/pass@1"
    c.train.best_metric = "eval/own/maj@4"
    assert best_metric(c, sets) == "eval/own/maj@4"
    c.train.best_metric = "eval/small/pass@4"
    with pytest.raises(ConfigError, match=r"train.best_metric='eval/small/pass@4' is not a metric "
                       r"of this run's eval; it logs \['eval/pass@1', "):  # fmt: skip
        best_metric(c, sets)
    assert best_metric(c, []) == ""  # no eval (train.eval_every=0): nothing to check


def test_without_a_held_out_split_the_benchmarks_are_the_eval(tmp_path):
    c = _config(tmp_path, bench=dict(correct_threshold=0.5))
    assert c.data.eval_path == ""  # jsonl training data without a held-out file
    (bench,) = _load(c)
    assert bench.name == "bench" and bench.task.threshold == 0.5
    c.train.eval_benchmarks = {}
    with pytest.raises(ConfigError, match="data.eval_path is empty: r1jax eval needs a held-out"):
        _load(c)
    c.data.name, c.data.eval_split = "gsm8k", ""  # a dataset's split set to none
    with pytest.raises(ConfigError, match="data.eval_split is empty: r1jax eval needs a held-out"):
        _load(c)


def test_eval_seeds_differ_by_set_and_keep_the_held_out_seed():
    from r1jax.rl.trainer import step_seed

    assert eval_seed(3, 5, "") == step_seed(3, 5, 1)  # the seed runs always had
    seeds = {eval_seed(3, 5, name) for name in ("", "math500", "aime2024")}
    assert len(seeds) == 3 and eval_seed(3, 5, "aime2024") == eval_seed(3, 5, "aime2024")


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(path="x.jsonl"), r"train.eval_benchmarks.b.name=None: needs the dataset name"),
        (dict(name="jsonl", prompts=-1), r"train.eval_benchmarks.b.prompts=-1: must be an integer"),
        (dict(name="jsonl", samples=0), r"train.eval_benchmarks.b.samples=0: must be an integer"),
        (dict(name="jsonl", correct_threshold="1"), r"b.correct_threshold='1': must be a number"),
    ],
)
def test_config_validation_names_the_benchmark_field(tmp_path, spec, message):
    c = make_config(str(tmp_path))
    c.train.eval_benchmarks.b = spec
    with pytest.raises(ConfigError, match=message):
        validate(c, 8, 1)


def test_bad_benchmark_names_and_values_are_named(tmp_path):
    c = make_config(str(tmp_path))
    c.train.eval_benchmarks = {"held_out": dict(name="math500")}
    with pytest.raises(ConfigError, match="benchmark names must be non-empty, without '/', not"):
        validate(c, 8, 1)
    for spec, message in [
        (
            dict(name="jsonl", path="x.jsonl", prompt="q"),
            r"config.train.eval_benchmarks.b: "
            r"unknown keys \['prompt'\]; allowed: \['name', ",
        ),
        (dict(name="nope"), r"config.train.eval_benchmarks.b: data config: unknown name 'nope'"),
        (dict(name="jsonl", path="x.csv"), r"eval_benchmarks.b: data config: name='jsonl' but "),
        (dict(prompt_builder="nope"), r"train.eval_benchmarks.b.prompt_builder='nope' is not one"),
        (dict(accuracy=("math_accuracy", 1.0, 2)), r"train.eval_benchmarks.b.accuracy=\("),
        (dict(accuracy="nope"), r"b.accuracy='nope': unknown reward 'nope'; registered rewards"),
    ]:
        c = _config(tmp_path, b=spec)
        with pytest.raises(ConfigError, match=message):
            _load(c)


def test_plots_draw_every_benchmark_and_reward_function():
    rows = [
        {"step": 0, "eval/pass@1": 0.1, "eval/aime/pass@1": 0.0, "eval/aime/maj@4": 0.0},
        {"step": 1, "reward/mean": 0.2, "reward/fn/countdown/mean": 0.2, "reward/fn/x/std": 0.1},
    ]
    assert _extra_curves("accuracy", rows) == ["eval/aime/pass@1"]
    assert _extra_curves("reward", rows) == ["reward/fn/countdown/mean"]  # not only from row 0
    assert _extra_curves("kl", rows) == []


def test_a_benchmark_that_cannot_be_prepared_is_named(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "other.txt").write_text("x")
    c = make_config(str(tmp_path))
    c.train.eval_benchmarks.aime = dict(
        name="aime2024", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual)
    )
    with pytest.raises(FileNotFoundError, match=r"config.train.eval_benchmarks.aime: .*aime2024"):
        _load(c)


def test_dataset_benchmarks_are_read_from_the_runs_data_dir(tmp_path, monkeypatch):
    import r1jax.data

    seen = []

    def load_source(cfg):
        seen.append(cfg)
        return [{"id": "a", "prompt": "1 2", "answer": "7", "source": "x", "solution": ""}]

    monkeypatch.setattr(r1jax.data, "load_source", load_source)
    c = _config(tmp_path)
    c.data.data_dir = "/data/tfds"
    c.train.eval_benchmarks = dict(aime=dict(name="aime2024"), own=dict(name="math500",
                                   data_dir="/elsewhere"))  # fmt: skip
    _load(c)
    assert seen == [{"name": "aime2024", "data_dir": "/data/tfds"},
                    {"name": "math500", "data_dir": "/elsewhere"}]  # fmt: skip


@pytest.mark.parametrize(
    "text, label, spec",
    [
        ("math500", "math500", {}),
        (" aime : samples = 16 , name=aime2024", "aime", {"samples": 16, "name": "aime2024"}),
        ("m:name=jsonl,path=/data/x-1.jsonl", "m", {"name": "jsonl", "path": "/data/x-1.jsonl"}),
        ('m:path="/data/a,b.jsonl",prompts=0', "m", {"path": "/data/a,b.jsonl", "prompts": 0}),
        (
            "m:accuracy=pkg.mod:fn,correct_threshold=0.5",
            "m",
            {"accuracy": "pkg.mod:fn", "correct_threshold": 0.5},
        ),
        (
            'cd:accuracy=("countdown", 1.0, {"a": 1, "b": [2, 3]}),split=test',
            "cd",
            {"accuracy": ("countdown", 1.0, {"a": 1, "b": [2, 3]}), "split": "test"},
        ),
        (
            "q:field_map={'prompt': 'q', 'answer': 'a'},source=None",
            "q",
            {"field_map": {"prompt": "q", "answer": "a"}, "source": None},
        ),
        ("s:prompt_builder=it's,samples=3", "s", None),  # an unclosed quote
        ("", "", None),
        (":samples=1", "", None),
        ("held_out:samples=2", "", None),
        ("a/b", "", None),
        ("x=1", "", None),
        ("x:samples", "", None),
        ("x:=3", "", None),
        ("x:samples=1,samples=2", "", None),
        ("x:sample=1", "", None),
        ("x:accuracy=(1,", "", None),
        ("x:accuracy=1)", "", None),
    ],
)
def test_command_line_benchmarks_parse_or_name_the_problem(text, label, spec):
    if spec is None:
        with pytest.raises(ConfigError, match=r"^--benchmark=.*: (needs NAME|.* is not key=value|"
                           r"unknown key 'sample'; allowed: \['name'|key 'samples' given twice|"
                           r"unbalanced)"):  # fmt: skip
            parse_benchmark(text)
    else:
        assert parse_benchmark(text) == (label, spec)


def test_command_line_benchmarks_join_the_configs(tmp_path):
    c = _config(tmp_path, own=dict(samples=2, accuracy="countdown"))
    c.lock()  # as r1jax's --config flag gives it
    bench = tmp_path / "bench.jsonl"
    add_benchmarks(c, [f"new:name=jsonl,path={bench},field_map={{'prompt': 'q', 'answer': 'a'}}",
                       "own:samples=5,prompts=3", "math500"])  # fmt: skip
    got = benchmarks(c)
    fields = dict(prompt="q", answer="a")
    assert got["own"] == dict(name="jsonl", path=str(bench), samples=5, prompts=3,
                              accuracy="countdown", field_map=fields)  # fmt: skip
    assert got["math500"] == dict(name="math500")  # a dataset by its name
    assert got["new"]["path"] == str(bench)
    validate(c, num_devices=8)
    new, own = _load(c, only=["own", "new"])  # in the order of the config (by name)
    assert (own.samples, len(own.records), own.accuracy) == (5, 3, "countdown")
    assert [r["text"] for r in new.records] == [f"{i} 9" for i in range(6)]
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        add_benchmarks(c, ["later:nope=1"])
    assert "later" not in benchmarks(c)
