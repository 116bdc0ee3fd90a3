"""Evaluation: estimators against enumeration, vote keys against hand-checked tables, and
``r1jax eval`` against the trainer's own eval of the same checkpoint."""

from __future__ import annotations

import copy
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from trainer_fixtures import make_config

from r1jax.evaluate import majority_vote, pass_at_k, summarize, vote, vote_key


@pytest.mark.parametrize("n", range(1, 7))
def test_pass_at_k_equals_the_fraction_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(samples, k))
            expected = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_summarize_averages_pass_at_k_over_questions():
    correct = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    out = summarize(correct, ks=(1, 2, 4, 8))
    assert out["pass@1"] == pytest.approx((0.25 + 1 + 0) / 3)
    assert out["pass@2"] == pytest.approx((0.5 + 1 + 0) / 3)  # 1 - C(3,2)/C(4,2) = 0.5
    assert out["pass@4"] == pytest.approx(2 / 3)
    assert "pass@8" not in out  # more than the 4 samples


@pytest.mark.parametrize(
    "answers,voted",
    [
        (["3", "5", "5", "3"], "3"),  # a tie goes to the first seen
        (["3", "5", "5"], "5"),
        ([None, None, "7"], "7"),  # no answer never wins
        ([None, ""], None),
        ([], None),
    ],
)
def test_majority_vote(answers, voted):
    assert majority_vote(answers) == voted


def test_the_vote_is_correct_when_a_sample_giving_it_is():
    assert vote(["a", "b", "b", None], [False, True, True, False]) == ("b", True)
    assert vote(["a", "b", "b", None], [True, False, False, True]) == ("b", False)
    assert vote([None, None], [True, True]) == (None, False)


@pytest.mark.parametrize(
    "reward,kwargs,completion,key",
    [
        ("gsm8k_accuracy", {}, "The answer is $1,000.", "1000"),
        ("gsm8k_accuracy", {}, "so 1000.0 apples", "1000"),
        ("gsm8k_accuracy", {}, "<answer>it is 7.50</answer>", "15/2"),
        ("gsm8k_accuracy", {}, "#### 72 then 5", "5"),  # flexible: the last number
        ("gsm8k_accuracy", {"mode": "strict"}, "#### 72 then 5", "72"),
        ("gsm8k_accuracy", {"mode": "strict"}, "so 1000", None),
        ("gsm8k_accuracy", {}, "no number", None),
        ("math_accuracy", {}, r"so \boxed{\frac12}", "1/2"),
        ("math_accuracy", {}, r"<answer>0.5</answer>", "1/2"),
        ("math_accuracy", {"symbolic": False}, r"\boxed{x = 3}", "3"),
        ("math_accuracy", {}, r"\boxed{\sqrt2}", r"\sqrt{2}"),
        ("math_accuracy", {}, r"\boxed{\text{(A)}}", "(A)"),
        ("math_accuracy", {}, "no answer", None),
        ("countdown", {}, "<think>..</think> <answer> 3 * 7 - 9 </answer>", "12 from 3 7 9"),
        ("countdown", {}, "<answer>(7*3)-9</answer>", "12 from 3 7 9"),
        ("countdown", {}, "<answer>9/2</answer>", "9/2 from 2 9"),
        ("countdown", {}, "<answer>3 * x</answer>", "3*x"),  # invalid: the text votes
        ("countdown", {}, "<answer> </answer>", None),
        ("trainer_fixtures:sevens", {}, r"\boxed{77}", "77"),  # other rewards: box fallback
        ("countdown", {}, "3*7-9", None),
    ],
)
def test_vote_keys_read_answers_like_their_reward(reward, kwargs, completion, key):
    assert vote_key(reward, **kwargs)(completion) == key


# ------------------------------------------------------------------ the eval loop and command


def _trained_run(tmp_path, **changes):
    from r1jax.rl.trainer import GRPOTrainer

    with open(tmp_path / "prompts.jsonl", "w") as f:  # make_config's prompts, of 2 sources
        for i in range(64):
            f.write(
                json.dumps({"prompt": f"{i % 10} {i // 10}", "answer": "7", "src": "ab"[i % 2]})
            )
            f.write("\n")
    c = make_config(
        str(tmp_path),
        train__steps=4,
        train__eval_every=2,
        train__eval_prompts=6,
        train__eval_samples=3,
        train__checkpoint_every=2,
        **changes,
    )
    lines = open(c.data.path).readlines()
    held_out = tmp_path / "held_out.jsonl"  # 10 prompts
    held_out.write_text("".join(lines[:10]))
    c.data.eval_path = str(held_out)
    c.data.field_map.source = "src"
    bench = tmp_path / "bench.jsonl"  # a benchmark of 8 other prompts, judged by its own reward
    bench.write_text("".join(lines[30:38]))
    c.train.eval_benchmarks = dict(
        bench=dict(name="jsonl", path=str(bench), prompts=5, samples=2,
                   accuracy="trainer_fixtures:starts_with_seven"),
    )  # fmt: skip
    trainer = GRPOTrainer(c)
    try:
        trainer.train()
    finally:
        trainer.close()
    return c


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 4-step run with checkpoints 2 and 4 (the tests below write their evals elsewhere,
    except the first, which owns ``<run_dir>/eval``)."""
    return _trained_run(tmp_path_factory.mktemp("trained"))


def test_eval_command_reproduces_the_runs_eval_and_writes_every_sample(trained_run):
    from r1jax.config import ConfigError
    from r1jax.eval_command import eval_command
    from r1jax.eval_sets import add_benchmarks

    c = copy.deepcopy(trained_run)
    tmp_path = Path(c.run_dir).parent
    logged = {}
    with open(os.path.join(c.run_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "eval/pass@1" in row:
                logged[row["step"]] = row
    assert sorted(logged) == [0, 2, 4]
    (tmp_path / "a_file").write_text("kept")  # found before the model loads, nothing written
    with pytest.raises(ConfigError, match="--dst=.*a_file is a file: eval writes a directory"):
        eval_command(c, step=2, out_dir=str(tmp_path / "a_file"))
    assert (tmp_path / "a_file").read_text() == "kept"
    lines: list[str] = []
    summary = eval_command(c, step=2, emit=lines.append)
    # same checkpoint, prompts, seed and sampler as the trainer's eval at step 2
    for name in ("pass@1", "pass@3", "maj@3", "length_mean", "truncated"):
        assert summary["metrics"][name] == pytest.approx(logged[2][f"eval/{name}"]), name
    bench = summary["benchmarks"]["bench"]
    assert sorted(bench["metrics"]) == ["length_mean", "maj@2", "pass@1", "pass@2", "truncated"]
    for name, value in bench["metrics"].items():  # the benchmark's: eval/bench/<metric>
        assert value == pytest.approx(logged[2][f"eval/bench/{name}"]), name
    assert bench["accuracy_reward"] == "trainer_fixtures:starts_with_seven"
    assert lines[0] == f"weights: {c.run_dir} step 2"
    assert lines[1].startswith(f"eval held_out: 6 prompts ({c.data.eval_path}), k=3 samples")
    assert any(line.lstrip().startswith("greedy   pass@1 ") for line in lines)
    by_source = [line for line in lines if line.startswith("  by source:")]
    assert len(by_source) == 1 and by_source[0].startswith("  by source: a: pass@1 ")
    assert "| b: pass@1" in by_source[0]  # the benchmark's rows have one source: no breakdown
    assert f"eval bench: 5 prompts ({tmp_path / 'bench.jsonl'}), k=2 samples" in lines[5]
    table = lines[-4:-1]  # every set on one line, before the paths of the results
    assert table[0].split() == ["set", "prompts", "k", "pass@1", "maj@k", "greedy"]
    m, g = summary["metrics"], summary["greedy"]
    assert table[1].split() == ["held_out", "6", "3", f"{m['pass@1']:.4f}",
                                f"{m['maj@3']:.4f}", f"{g['pass@1']:.4f}"]  # fmt: skip
    assert table[2].split()[:3] == ["bench", "5", "2"]

    # the same benchmark given on the command line (r1jax eval --benchmark=...) to a config
    # without it: the same results
    given = copy.deepcopy(c)
    given.train.eval_benchmarks = {}
    add_benchmarks(given, [f"bench:name=jsonl,path={tmp_path / 'bench.jsonl'},prompts=5,"
                           "samples=2,accuracy=trainer_fixtures:starts_with_seven"])  # fmt: skip
    again = eval_command(given, step=2, out_dir=str(tmp_path / "cli"), emit=lambda _: None,
                         only=["bench"])  # fmt: skip
    assert again["benchmarks"] == summary["benchmarks"]

    # prompt i draws with id i: eval blocks of another size (rl.prompts_per_step) give the
    # same results, and a 3-prompt eval gives the first 3 prompts' samples of this one
    blocks = copy.deepcopy(c)
    blocks.rl.prompts_per_step = 2
    other = eval_command(blocks, step=2, out_dir=str(tmp_path / "blocks"), emit=lambda _: None)
    assert (other["metrics"], other["benchmarks"]) == (summary["metrics"], summary["benchmarks"])
    eval_command(c, step=2, num_prompts=3, greedy=False, out_dir=str(tmp_path / "head"),
                 emit=lambda _: None)  # fmt: skip
    sampled = lambda d: [json.loads(x)["sampled"] for x in open(f"{d}/step_2_samples.jsonl")]
    assert sampled(tmp_path / "head") == sampled(os.path.join(c.run_dir, "eval"))[:3]

    out = os.path.join(c.run_dir, "eval")
    assert json.load(open(os.path.join(out, "step_2.json"))) == summary
    rows = [json.loads(line) for line in open(os.path.join(out, "step_2_samples.jsonl"))]
    assert len(rows) == summary["num_prompts"] == 6
    from trainer_fixtures import sevens, starts_with_seven

    correct = []
    for row in rows:
        s = row["sampled"]
        assert len(s["completions"]) == len(s["correct"]) == len(s["answers"]) == 3
        # correct = the accuracy reward of the written completion >= the threshold (1.0)
        assert s["correct"] == [sevens(t, row["record"]) >= 1.0 for t in s["completions"]]
        correct.append(s["correct"])
        assert len(row["greedy"]["completions"]) == 1
        assert row["record"]["text"] == row["record"]["prompt"]  # the plain template
    assert summary["metrics"]["pass@1"] == pytest.approx(np.mean(correct))
    rows = [json.loads(line) for line in open(os.path.join(out, "step_2_bench_samples.jsonl"))]
    assert [row["record"]["prompt"] for row in rows] == ["0 3", "1 3", "2 3", "3 3", "4 3"]
    correct = [row["sampled"]["correct"] for row in rows]
    for row, ok in zip(rows, correct, strict=True):  # judged by the benchmark's own reward
        assert ok == [starts_with_seven(t, {}) >= 1.0 for t in row["sampled"]["completions"]]
    assert bench["metrics"]["pass@1"] == pytest.approx(np.mean(correct))

    # newest checkpoint by default, all prompts with --num_prompts=0, no greedy pass
    newest = eval_command(c, num_prompts=0, greedy=False, emit=lambda _: None)
    assert newest["step"] == 4 and newest["num_prompts"] == 10 and "greedy" not in newest
    assert newest["benchmarks"]["bench"]["num_prompts"] == 8
    assert sorted(newest["groups"]["source"]) == ["a", "b"]
    assert newest["groups"]["source"]["a"]["prompts"] == 5
    assert os.path.exists(os.path.join(out, "step_4.json"))
    # one set by name: the benchmark alone, with the same results
    assert lines[-1].startswith("results: ") and "replacing" not in lines[-1]
    said = []  # step 4 again: its results are replaced, and it says so
    only = eval_command(c, num_prompts=0, greedy=False, emit=said.append, only=["bench"])
    assert said[-1].endswith("(replacing an earlier eval of these weights)")
    assert "metrics" not in only and list(only["benchmarks"]) == ["bench"]
    assert only["benchmarks"] == newest["benchmarks"]
    # every checkpoint, oldest first, on one model whose weights are replaced in place: step 4
    # after step 2 gives what a fresh load of step 4 gave
    lines = []
    every = eval_command(c, num_prompts=0, greedy=False, emit=lines.append, only=["bench"],
                         all_steps=True)  # fmt: skip
    assert [s["step"] for s in every["steps"]] == [2, 4]
    assert every["steps"][1]["benchmarks"] == only["benchmarks"]
    assert every["steps"][0]["benchmarks"] != only["benchmarks"]
    assert lines[-3].split() == ["step", "bench"]
    assert lines[-1].split() == ["4", f"{only['benchmarks']['bench']['metrics']['pass@1']:.4f}"]


def test_eval_command_errors_name_the_problem(tmp_path):
    from r1jax.checkpoint import CheckpointError
    from r1jax.config import ConfigError
    from r1jax.eval_command import eval_command

    c = make_config(str(tmp_path))
    with pytest.raises(ConfigError, match="data.eval_path is empty: r1jax eval needs a held-out"):
        eval_command(c, emit=lambda _: None)
    c.data.eval_path = c.data.path
    with pytest.raises(CheckpointError, match="has no checkpoint of step 3"):
        eval_command(c, step=3, emit=lambda _: None)
    with pytest.raises(ConfigError, match=r"--all_steps: .*/run has no checkpoint to evaluate"):
        eval_command(c, all_steps=True, emit=lambda _: None)
    c.rewards.accuracy = "nope"
    with pytest.raises(ConfigError, match="rewards.accuracy='nope' is not one of"):
        eval_command(c, emit=lambda _: None)
    assert not os.path.exists(os.path.join(c.run_dir, "eval"))


def test_groups_break_the_metrics_down_by_fields_that_vary():
    from r1jax.eval_run import summarize_groups

    records = [
        {"source": "math", "level": 1, "year": 2024},
        {"source": "math", "level": 2, "year": 2024},
        {"source": "math", "level": 2, "year": 2024},
        {"source": "math", "level": None, "year": 2024},  # no level: in no level group
    ]

    def result(correct, vote_correct):
        return {"correct": correct, "vote_correct": vote_correct, "lengths": [5, 7],
                "finish": ["eos", "length"]}  # fmt: skip

    results = [
        result([True, True], True),
        result([True, False], False),
        result([False, False], False),
        result([True, True], True),
    ]
    groups = summarize_groups(records, results)
    assert list(groups) == ["level"]  # one source, one year: nothing to break down
    assert groups["level"]["1"] == {"pass@1": 1.0, "pass@2": 1.0, "maj@2": 1.0,
                                    "length_mean": 6.0, "truncated": 0.5, "prompts": 1}  # fmt: skip
    assert groups["level"]["2"]["pass@1"] == 0.25 and groups["level"]["2"]["pass@2"] == 0.5
    assert groups["level"]["2"]["maj@2"] == 0.0 and groups["level"]["2"]["prompts"] == 2


class _FixedSampler:
    """Gives every prompt's k samples the completion ``answers[prompt]``."""

    def __init__(self, answers):
        self.answers = answers

    def generate(self, params, inputs, k, sampling, draw_ids=None):
        from types import SimpleNamespace

        texts = [self.answers[t] for t in inputs for _ in range(k)]
        return SimpleNamespace(
            texts=texts, lengths=[5] * len(texts), finish_reason=["eos"] * len(texts)
        )


def test_rows_routed_to_other_rewards_are_judged_by_their_routes_accuracy():
    """With ``rewards.routes``, a source's rows are scored only by its route's terms: the
    eval judges them by the route's accuracy reward (it read the default one, 0 there, so
    every routed prompt counted as wrong), votes read their answers, and the training metric
    ``reward/accuracy_mean`` does the same; a route with no rule terms cannot be judged."""
    import ml_collections

    from r1jax import build
    from r1jax.config import ConfigError
    from r1jax.eval_run import evaluate_prompts, summarize_results
    from r1jax.rewards import RewardScorer
    from r1jax.sampling.params import SamplingParams

    answers = {
        "q-math": "<answer>\\frac{1}{2}</answer>",  # right
        "q-cd": "<answer>3*7-9</answer>",  # right (12)
        "q-cd2": "<answer>3+7+9</answer>",  # wrong (19, not 12)
    }
    records = [
        dict(id="m", text="q-math", answer="1/2", source="math"),
        dict(id="c", text="q-cd", answer="12", source="countdown", numbers=[3, 7, 9], target=12),
        dict(id="c2", text="q-cd2", answer="12", source="countdown", numbers=[3, 7, 9],
             target=12),
    ]  # fmt: skip
    routes = {
        "countdown": (("countdown", 1.0), ("format_strict", 0.2)),  # the first term judges
        "gsm": (("format_strict", 0.2), ("math_accuracy", 1.0)),  # rewards.accuracy's label
        "chat": (),  # no rule reward (a reward model's prompts)
    }
    c = ml_collections.ConfigDict(dict(rewards=dict(
        functions=(("math_accuracy", 1.0),), accuracy="", correct_threshold=1.0,
        routes=routes)))  # fmt: skip
    task = build.eval_task(c)
    assert task.judge_of(records[0])[0] == "math_accuracy"
    assert task.judge_of(records[1])[0] == "countdown"
    assert task.judge_of({"source": "gsm"})[0] == "math_accuracy"
    assert task.judge_of({"source": "chat"}) is None
    with RewardScorer([("math_accuracy", 1.0)], routes=routes, num_workers=0) as scorer:
        res = evaluate_prompts(_FixedSampler(answers), None, records, scorer, task,
                               SamplingParams(), 2, 8)  # fmt: skip
        assert [r["correct"] for r in res] == [[True, True], [True, True], [False, False]]
        # votes read answers as each row's accuracy reward does (countdown: the value)
        assert [r["vote"] for r in res] == ["1/2", "12 from 3 7 9", "19 from 3 7 9"]
        assert summarize_results(res)["pass@1"] == pytest.approx(2 / 3)
        scores = scorer.score([answers[r["text"]] for r in records for _ in range(2)],
                              [r for r in records for _ in range(2)])  # fmt: skip
    correct = task.correct_rows(records, scores.per_function)
    np.testing.assert_array_equal(correct, [1, 1, 1, 1, 0, 0])
    chat = [dict(id="x", source="chat", prompt="hi")]
    assert np.isnan(task.correct_rows(chat, {"math_accuracy": np.zeros(2)})).all()
    with pytest.raises(ConfigError, match=r"the held-out set: record 'x' has source 'chat'"):
        task.check_records(records + chat, "the held-out set")


def test_an_interrupted_eval_resumes_where_it_stopped(trained_run, tmp_path, monkeypatch):
    """The eval stops (an error) after 4 of the 10 held-out prompts; the same command samples
    only the other 6, and its results equal an uninterrupted eval's. Kept blocks of other
    settings are replaced, not mixed in."""
    from r1jax import eval_partial, eval_run
    from r1jax.eval_command import eval_command

    c = copy.deepcopy(trained_run)
    c.rl.prompts_per_step = 2  # blocks of 2 prompts

    def run(out: str, all_steps: bool = False, **kw):
        return eval_command(c, step=None if all_steps else 2, num_prompts=0, greedy=False,
                            out_dir=str(tmp_path / out), only=["held_out"], all_steps=all_steps,
                            **kw)  # fmt: skip

    whole = run("whole", emit=lambda _: None)
    real_add, real_evaluate = eval_partial.PartialResults.add, eval_run.evaluate_prompts

    def add_then_fail(self, results):
        real_add(self, results)
        if results[-1]["index"] == 3:
            raise RuntimeError("died after prompt 4")

    monkeypatch.setattr(eval_partial.PartialResults, "add", add_then_fail)
    with pytest.raises(RuntimeError, match="died after prompt 4"):
        run("resumed", emit=lambda _: None)
    partial = tmp_path / "resumed" / "step_2_sampled.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 1 + 4  # settings + 4 prompts
    with open(partial, "a") as f:
        f.write('{"index": 4, "corr')  # a line cut short by the crash
    monkeypatch.setattr(eval_partial.PartialResults, "add", real_add)
    sampled = []

    def counting(sampler, params, records, *args, done=(), **kw):
        sampled.append(len(records) - len(done))
        return real_evaluate(sampler, params, records, *args, done=done, **kw)

    monkeypatch.setattr(eval_run, "evaluate_prompts", counting)
    said = []
    resumed = run("resumed", emit=said.append)
    assert sampled == [6]
    assert f"resuming the unfinished eval {partial} after 4 prompts" in said
    assert resumed["metrics"] == whole["metrics"]
    rows = lambda out: [json.loads(x) for x in open(tmp_path / out / "step_2_samples.jsonl")]
    assert rows("resumed") == rows("whole")
    assert not partial.exists()  # the results are written: the kept blocks are gone

    # blocks of another temperature are not reused
    monkeypatch.setattr(eval_partial.PartialResults, "add", add_then_fail)
    with pytest.raises(RuntimeError):
        run("other")
    monkeypatch.setattr(eval_partial.PartialResults, "add", real_add)
    c.train.eval_temperature = 0.9
    said, sampled[:] = [], []
    run("other", emit=said.append)
    assert sampled == [10]
    replaced = [line for line in said if line.startswith("replacing the unfinished eval ")]
    assert len(replaced) == 1 and replaced[0].endswith("(other draw.temperature)")

    # --all_steps: a crash in step 4's eval; the rerun takes step 2 whole from its kept blocks
    calls = []

    def fail_in_step_4(self, results):
        real_add(self, results)
        calls.append(1)
        if len(calls) == 7:  # step 2: 5 blocks of 2 prompts; step 4: the 2nd block
            raise RuntimeError("died in step 4")

    monkeypatch.setattr(eval_partial.PartialResults, "add", fail_in_step_4)
    with pytest.raises(RuntimeError, match="died in step 4"):
        run("every", all_steps=True, emit=lambda _: None)
    monkeypatch.setattr(eval_partial.PartialResults, "add", real_add)
    sampled[:] = []
    run("every", all_steps=True, emit=lambda _: None)
    assert sampled == [0, 6]
    assert not [f for f in os.listdir(tmp_path / "every") if f.endswith(".partial.jsonl")]


def test_kept_blocks_that_cannot_be_read_are_replaced(tmp_path):
    from r1jax.eval_partial import PartialResults

    path = tmp_path / "p.partial.jsonl"
    for text in ('{"settings": "old"}\n', "[1, 2]\n", "garbage\n", ""):
        path.write_text(text)
        said = []
        assert PartialResults(str(path), {"prompts": 3}, said.append).done == []
        assert said == [f"replacing the unfinished eval {path} (unreadable)"] or not text
        assert path.read_text() == '{"settings": {"prompts": 3}}\n'
