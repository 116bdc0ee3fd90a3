"""JSONL / Parquet loader (field map, bad rows) and the gold-answer parsers."""

import json
import os

import ml_collections
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r1jax.data.answers import last_boxed, parse_boxed, parse_gsm8k, parse_integer
from r1jax.data.files import load_records
from r1jax.data.records import DataError
from r1jax.data.sources import load_source

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data", "jsonl")
CUSTOM = os.path.join(FIXTURES, "custom.jsonl")
FIELD_MAP = {"prompt": "question", "answer": "final"}


def test_field_map_and_skipped_rows():
    records = load_records(CUSTOM, field_map=FIELD_MAP, source="math")
    assert list(records) == [
        {"prompt": "What is 2 + 2?", "answer": "4", "solution": "", "source": "math", "id": "q1"},
        {
            "prompt": "Name the capital of France.",
            "answer": "Paris",
            "solution": "",
            "source": "math",
            "id": "custom.jsonl:2",
        },
        {
            "prompt": "Last good row?",
            "answer": "yes",
            "solution": "",
            "source": "math",
            "id": "custom.jsonl:8",
        },
    ]
    # line 3 is blank (not a row); bad rows: 4 empty prompt, 5 invalid JSON, 6 no question,
    # 7 blank answer
    assert records.skipped == 4
    assert records.bad_rows["by_field"] == {"question": 2, "<json>": 1, "final": 1}
    rows = [e.split(", row ")[1].split(":")[0] for e in records.bad_rows["examples"]]
    assert rows == ["4", "5", "6", "7"]


@pytest.mark.parametrize(
    "line, field, value",
    [(4, "question", "''"), (5, "<json>", "'{not json"), (6, "question", "{'final': '6'}")],
)
def test_fail_names_file_row_field_value(tmp_path, line, field, value):
    lines = open(CUSTOM).read().splitlines()
    path = tmp_path / "one_bad.jsonl"
    path.write_text("\n".join(lines[:2] + [""] * (line - 3) + [lines[line - 1]]) + "\n")
    with pytest.raises(DataError) as err:
        load_records(str(path), field_map=FIELD_MAP, on_bad_row="fail")
    e = err.value
    assert (e.file, e.row, e.field) == (str(path), line, field)
    assert str(e).startswith(f"{path}, row {line}: field '{field}'") and value in str(e)


def test_countdown_style_rows_and_load_source():
    src = load_source(
        {
            "name": "jsonl",
            "path": os.path.join(FIXTURES, "countdown.jsonl"),
            "field_map": {"numbers": "nums"},
            "source": "countdown",
        }
    )
    assert list(src) == [
        {
            "prompt": "Make 22 from 3, 5, 7.",
            "numbers": [3, 5, 7],
            "target": 22,
            "answer": "22",  # no answer column: str(target)
            "solution": "",
            "source": "countdown",
            "id": "countdown.jsonl:1",
        }
    ]
    assert src.bad_rows["by_field"] == {"target": 1}
    with pytest.raises(DataError, match=r"countdown\.jsonl, row 2: field 'target': not an integer"):
        load_records(
            os.path.join(FIXTURES, "countdown.jsonl"),
            field_map={"numbers": "nums"},
            on_bad_row="fail",
        )


def test_load_source_accepts_config_dict():
    cfg = ml_collections.ConfigDict(
        {
            "name": "jsonl",
            "path": CUSTOM,
            "field_map": FIELD_MAP,
            "data_dir": ml_collections.config_dict.placeholder(str),  # unset keys are ignored
        }
    )
    src = load_source(cfg)
    assert [r["answer"] for r in src] == ["4", "Paris", "yes"] and src.skipped == 4


def test_parquet_and_answer_parser(tmp_path):
    table = pa.table(
        {
            "q": ["Add 1 and 1.", "Half of 1?", "Broken"],
            "sol": ["So $\\boxed{2}$.", "$\\boxed{\\frac{1}{2}}$", "no box here"],
            "task": ["math", "math", "math"],
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(table, str(path))
    records = load_records(
        str(path),
        field_map={"prompt": "q", "answer": "sol", "solution": "sol", "source": "task"},
        answer_parser="boxed",
    )
    assert [(r["answer"], r["id"], r["source"]) for r in records] == [
        ("2", "d.parquet:1", "math"),
        ("\\frac{1}{2}", "d.parquet:2", "math"),
    ]
    assert (
        records.skipped == 1 and "d.parquet, row 3: field 'sol'" in records.bad_rows["examples"][0]
    )


def test_glob_list_and_errors(tmp_path):
    for i in range(2):
        (tmp_path / f"part{i}.jsonl").write_text(
            json.dumps({"prompt": f"p{i}", "answer": i}) + "\n"
        )
    records = load_records(str(tmp_path / "part*.jsonl"))
    assert [(r["prompt"], r["answer"], r["source"]) for r in records] == [
        ("p0", "0", "custom"),
        ("p1", "1", "custom"),
    ]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_records(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match=r"unknown keys \['question'\]"):
        load_records(CUSTOM, field_map={"question": "prompt"})
    with pytest.raises(ValueError, match="answer_parser"):
        load_records(CUSTOM, answer_parser="last_number")


def test_unreadable_files_and_empty_sources_are_named(tmp_path):
    from r1jax.config import ConfigError

    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(b'{"prompt": "ok", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n')
    records = load_records(str(latin))  # skip (the default): the bad line is counted
    assert [r["prompt"] for r in records] == ["ok"] and records.skipped == 1
    with pytest.raises(DataError, match=r"latin1.jsonl, row 2: field '<utf-8>': not UTF-8"):
        load_records(str(latin), on_bad_row="fail")
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    with pytest.raises(DataError, match=r"fake.parquet, row 1: field '<parquet>': not readable"):
        load_records(str(fake))
    (tmp_path / "empty.jsonl").write_text("\n")
    empty = {"name": "jsonl", "path": str(tmp_path / "empty.jsonl")}
    with pytest.raises(ConfigError, match=r"empty.jsonl' holds no usable rows \(0 bad rows"):
        load_source(empty)
    with pytest.raises(ConfigError, match=r"on_bad_row='ignore': one of \['skip', 'fail'\]"):
        load_source(dict(empty, on_bad_row="ignore"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{42}$", "42"),
        ("\\boxed{1} then \\boxed{\\frac{a}{b}}", "\\frac{a}{b}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("$\\boxed 7$.", "7"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed {3}", "3"),
        ("no box", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_answer_parsers():
    assert parse_gsm8k("work\n#### 1,234") == "1234"
    assert parse_gsm8k("#### -3.5") == "-3.5"
    assert [parse_integer(x) for x in ("033", 7, "7.0", "+12")] == ["33", "7", "7", "12"]
    for parser, text, reason in [
        (parse_gsm8k, "no marker", "no '####'"),
        (parse_gsm8k, "#### ten", "not a number"),
        (parse_boxed, "\\boxed{ }", "empty"),
        (parse_integer, "3.5", "not an integer"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parser(text)


def test_a_mapped_source_column_missing_from_a_row_is_a_data_error(tmp_path):
    path = tmp_path / "src.jsonl"
    path.write_text(
        '{"prompt": "1+1", "answer": "2", "task": "math"}\n{"prompt": "2+2", "answer": "4"}\n'
    )
    records = load_records(str(path), field_map={"source": "task"})  # skip by default
    assert [r["source"] for r in records] == ["math"] and records.skipped == 1
    with pytest.raises(DataError, match=r"src.jsonl, row 2: field 'task': missing field"):
        load_records(str(path), field_map={"source": "task"}, on_bad_row="fail")


def test_rows_no_rule_judges_need_no_answer(tmp_path):
    """All-scenario RL mixes reasoning prompts (gold answers) with general ones that only the
    reward model scores: a run whose rewards.routes gives a source no rule terms loads that
    source's rows without an answer; other rows still need one."""
    from r1jax import build
    from r1jax.config import ConfigError, base_config, validate

    path = tmp_path / "mixed.jsonl"
    rows = [
        {"prompt": "1+1", "answer": "#### 2", "src": "math"},
        {"prompt": "Write a poem", "src": "general"},
        {"prompt": "Say hi", "answer": "", "src": "general"},
        {"prompt": "2+2", "src": "math"},  # a math row without an answer stays bad
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = base_config()
    c.data.update(dict(name="jsonl", path=str(path), on_bad_row="skip", answer_parser="gsm8k"))
    c.data.field_map = ml_collections.ConfigDict({"source": "src"})
    c.rewards.routes = ml_collections.ConfigDict({"general": ()})
    records = load_source(build.source_config(c))
    assert [(r["source"], r["answer"]) for r in records] == [
        ("math", "2"), ("general", ""), ("general", "")]  # fmt: skip
    assert records.skipped == 1 and records.bad_rows["by_field"] == {"answer": 1}
    c.rewards.routes = ml_collections.ConfigDict()  # every row judged: answers needed
    assert load_source(build.source_config(c)).skipped == 3
    c.data.field_map = ml_collections.ConfigDict()
    c.data.source = "gsm8k_mine"  # the source of every row of the file
    assert {r["source"] for r in load_source(build.source_config(c))} == {"gsm8k_mine"}
    c.data.answer_parser = "boxd"
    with pytest.raises(ConfigError, match=r"data.answer_parser='boxd': one of \['boxed'"):
        validate(c)


def test_text_rows_of_a_config_file_are_formatted_and_bad_rows_counted(tmp_path, capsys):
    from r1jax.build import prompt_formatter
    from r1jax.config import ConfigError, base_config
    from r1jax.recipes import formatted_text_rows
    from r1jax.tokenizer import CharTokenizer

    path = tmp_path / "pairs.jsonl"
    rows = [
        {"q": " 2+2? ", "good": "4", "bad": " 5\n"},
        {"q": "3+3?", "good": "6"},  # no "bad": skipped
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = base_config()
    c.data.on_bad_row = "skip"
    c.reward_model.train_path = str(path)
    tok = CharTokenizer("0123456789+? ")
    got = formatted_text_rows(c, tok, "reward_model.train_path", "q", ("good", "bad"))
    assert got == [(prompt_formatter(c, tok)({"prompt": "2+2?"}), "4", " 5\n")]
    assert f"reward_model.train_path: 1 bad rows of {path} skipped ({{'bad': 1}})" in (
        capsys.readouterr().out
    )
    path.write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(ConfigError, match=r"config.reward_model.train_path='.*': no usable rows"):
        formatted_text_rows(c, tok, "reward_model.train_path", "q", ("good", "bad"))


def test_the_fields_rewards_read_are_kept_and_checked(tmp_path):
    """``tests`` (code_tests) and ``language`` (language_consistency) reach the records, from
    JSONL and Parquet, mapped or under their own names; a code row needs no answer."""
    from r1jax.rewards import get_reward

    rows = [
        {"q": "Write f.", "checks": "def g():\n    return 2\nassert f() == g()", "lang": "zh"},
        {"q": "Write f.", "checks": ["assert f() == 2"], "final": "n/a"},
        {"q": "Bad tests.", "checks": 3},
        {"q": "Bad language.", "checks": ["assert 1"], "lang": "klingon"},
        {"q": "No tests.", "checks": []},
    ]
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fm = {"prompt": "q", "answer": "final", "tests": "checks", "language": "lang"}
    records = load_records(str(path), field_map=fm, source="code")
    assert [r["id"] for r in records] == ["code.jsonl:1", "code.jsonl:2"]
    assert records[0]["tests"] == rows[0]["checks"] and records[0]["language"] == "zh"
    assert records[0]["answer"] == "" and records[1]["answer"] == "n/a"
    assert "language" not in records[1]
    assert records.bad_rows["by_field"] == {"checks": 2, "lang": 1}
    assert "unsupported language" in records.bad_rows["examples"][1]

    code = "```python\ndef f():\n    return 2\n```"
    assert get_reward("code_tests")(code, records[0]) == 1.0
    assert get_reward("code_tests")(code, records[1]) == 1.0
    zh = "<think>先算二加二</think><answer>4</answer>"
    assert get_reward("language_consistency")(zh, records[0]) == 1.0  # the row's language
    assert get_reward("language_consistency")(zh, records[1]) == 0.0  # the default, "en"
    assert get_reward("language_consistency")(zh, records[1], language="zh") == 1.0

    table = pa.table({"prompt": ["Write f."], "tests": [["assert f() == 2"]], "language": ["en"]})
    pq.write_table(table, str(tmp_path / "code.parquet"))
    (record,) = load_records(str(tmp_path / "code.parquet"))
    assert (record["tests"], record["language"], record["answer"]) == (
        ["assert f() == 2"], "en", "")  # fmt: skip
