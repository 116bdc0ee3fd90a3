"""`r1jax traces`: which completions become SFT traces, and resuming a long job."""

from __future__ import annotations

import json
import os

import pytest
from trainer_fixtures import make_config, sevens

from r1jax.config import ConfigError
from r1jax.traces_command import select_pairs, select_traces, traces_command

RECORDS = [{"prompt": "p1", "id": "a", "answer": "7"}, {"prompt": "p2", "id": "b", "answer": "7"}]
RESULTS = [
    {
        "completions": ["x", "x", "y", "z", "w"],
        "correct": [True, True, True, False, True],
        "finish": ["eos", "eos", "length", "eos", "stop"],
        "scores": [1.0, 1.0, 1.0, 0.0, 1.0],
    },
    {
        "completions": ["u", "v"],
        "correct": [False, False],
        "finish": ["eos", "stop"],
        "scores": [0.0, 0.5],
    },
]


def test_correct_traces_drop_truncated_wrong_duplicate_and_extra_completions():
    rows, counts = select_traces(RECORDS, RESULTS, "correct", max_per_prompt=1)
    assert rows == [{"prompt": "p1", "completion": "x", "id": "a", "answer": "7", "reward": 1.0}]
    assert counts == dict(prompts=2, samples=7, kept=1, prompts_kept=1, truncated=1, empty=0,
                          incorrect=3, duplicate=1, beyond_max=1)  # fmt: skip


def test_all_traces_keep_wrong_but_finished_completions():
    rows, counts = select_traces(RECORDS, RESULTS, "all", max_per_prompt=3)
    assert [(r["prompt"], r["completion"]) for r in rows] == [
        ("p1", "x"), ("p1", "z"), ("p1", "w"), ("p2", "u"), ("p2", "v")
    ]  # fmt: skip
    assert counts["truncated"] == 1 and counts["duplicate"] == 1 and counts["incorrect"] == 0


def test_empty_completions_are_neither_traces_nor_pairs():
    """A finished completion with no text (the model stopped at once) is dropped and counted:
    cold-start SFT and reward-model pair files refuse empty text."""
    results = [{"completions": ["", " \n", "x", "y"], "correct": [True, False, True, False],
                "finish": ["eos", "stop", "eos", "eos"], "scores": [1, 0, 1, 0]}]  # fmt: skip
    rows, counts = select_traces(RECORDS[:1], results, "all", max_per_prompt=4)
    assert [r["completion"] for r in rows] == ["x", "y"] and counts["empty"] == 2
    rows, counts = select_pairs(RECORDS[:1], results, max_per_prompt=4)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("x", "y")] and counts["empty"] == 2


def test_pairs_match_correct_with_wrong_completions_of_the_same_prompt():
    results = [
        {
            "completions": ["x", "x", "y", "z", "w", "q", "r"],
            "correct": [True, True, True, False, True, False, False],
            "finish": ["eos", "eos", "length", "eos", "stop", "length", "eos"],
        },
        RESULTS[1],  # never right: no pair
    ]
    rows, counts = select_pairs(RECORDS, results, max_per_prompt=1)
    assert rows == [{"prompt": "p1", "chosen": "x", "rejected": "z", "id": "a", "answer": "7"}]
    assert counts == dict(prompts=2, samples=9, kept=1, prompts_kept=1, truncated=2, empty=0,
                          incorrect=4, duplicate=1, beyond_max=1)  # fmt: skip
    rows, counts = select_pairs(RECORDS, results, max_per_prompt=5)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("x", "z"), ("w", "r")]
    assert counts["beyond_max"] == 0


def _config(tmp_path):
    # 8-token completions of a random tiny model: about a quarter have >= 25% sevens
    return make_config(str(tmp_path), rewards__correct_threshold=0.25, rl__prompts_per_step=4)


def test_traces_are_correct_distinct_samples_and_a_resumed_job_writes_the_same_file(
    tmp_path, monkeypatch
):
    from r1jax import eval_run

    c = _config(tmp_path)
    args = dict(num_prompts=12, num_samples=4, keep="correct", max_per_prompt=2)
    lines: list[str] = []
    counts = traces_command(c, str(tmp_path / "straight.jsonl"), emit=lines.append, **args)
    rows = [json.loads(line) for line in open(tmp_path / "straight.jsonl")]
    assert counts["prompts"] == 12 and counts["samples"] == 48
    assert 0 < counts["kept"] == len(rows) and counts["incorrect"] > 0
    assert (
        sum(
            counts[k]
            for k in ("kept", "truncated", "empty", "incorrect", "duplicate", "beyond_max")
        )
        == 48
    )
    for row in rows:
        assert row["reward"] == pytest.approx(sevens(row["completion"], row))
        assert row["reward"] >= 0.25
    by_prompt: dict[str, list[str]] = {}
    for row in rows:
        by_prompt.setdefault(row["id"], []).append(row["completion"])
    assert all(len(v) == len(set(v)) <= 2 for v in by_prompt.values())
    raw = {f"prompts.jsonl:{n}": json.loads(line)["prompt"]
           for n, line in enumerate(open(c.data.path), 1)}  # fmt: skip
    assert all(row["prompt"] == raw[row["id"]] for row in rows)  # raw, untemplated
    assert [row["id"] for row in rows] == sorted(
        (row["id"] for row in rows), key=lambda i: int(i.split(":")[1])
    )  # in prompt order
    assert lines[-1].startswith(f"traces: {len(rows)} traces from ")
    # the rows are SFT examples as `cold_start.task="file"` reads them
    from r1jax.data.files import load_text_pairs

    pairs, bad = load_text_pairs(str(tmp_path / "straight.jsonl"))
    assert len(pairs) == len(rows) and bad.count == 0

    # a job that dies in its second block of 4 prompts keeps the first block ...
    real = eval_run.evaluate_prompts
    calls = []

    def dies_second_time(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*a, **kw)

    monkeypatch.setattr(eval_run, "evaluate_prompts", dies_second_time)
    dst = str(tmp_path / "resumed.jsonl")
    with pytest.raises(RuntimeError, match="killed"):
        traces_command(c, dst, emit=lambda _: None, **args)
    assert json.load(open(dst + ".partial.json"))["done"] == 4 and not os.path.exists(dst)
    monkeypatch.setattr(eval_run, "evaluate_prompts", real)
    # ... other settings are refused; the same ones continue it, to the same file
    with pytest.raises(ConfigError, match=r"other settings \(samples\)"):
        traces_command(c, dst, emit=lambda _: None, **dict(args, num_samples=2))
    lines = []
    assert traces_command(c, dst, emit=lines.append, **args) == counts
    assert "resuming after 4 prompts" in lines[1]
    assert open(dst).read() == open(tmp_path / "straight.jsonl").read()
    assert not os.path.exists(dst + ".partial") and not os.path.exists(dst + ".partial.json")
    with pytest.raises(ConfigError, match="resumed.jsonl exists: give another file"):
        traces_command(c, dst, emit=lambda _: None, **args)  # a finished file is not overwritten


def test_traces_settings_errors_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--keep='best' is not valid"):
        traces_command(_config(tmp_path), str(tmp_path / "t.jsonl"), keep="best")
    with pytest.raises(ConfigError, match="--max_per_prompt=0 is not valid"):
        traces_command(_config(tmp_path), str(tmp_path / "t.jsonl"), max_per_prompt=0)
    with pytest.raises(ConfigError, match="--keep=pairs needs --num_samples >= 2"):
        traces_command(_config(tmp_path), str(tmp_path / "t.jsonl"), keep="pairs", num_samples=1)
    assert not (tmp_path / "t.jsonl").exists()


def test_an_unreadable_progress_file_is_named(tmp_path):
    from r1jax.traces_command import _Progress

    (tmp_path / "t.jsonl.partial.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"t.jsonl.partial.json: unreadable progress of an "
                       r"unfinished traces run \(not the progress"):  # fmt: skip
        _Progress(str(tmp_path / "t.jsonl"), {"keep": "all"}, write=True)
    (tmp_path / "t.jsonl.partial.json").write_text("{garbage")
    with pytest.raises(ConfigError, match="unreadable progress"):
        _Progress(str(tmp_path / "t.jsonl"), {"keep": "all"}, write=True)
