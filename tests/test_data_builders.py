"""tfds builders: build from the dummy files in tests/fixtures/data into a tmp data_dir as
array_record, read back through `tfds.data_source` (no TensorFlow) and check every record."""

import os
import sys

import pytest
import tensorflow_datasets as tfds

from r1jax.data.builders import countdown_config
from r1jax.data.records import DataError, to_python
from r1jax.data.sources import load_source

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def read(name, split, data_dir, manual, **builder_kwargs):
    """Builds (if needed) and reads one split via tfds.data_source; records sorted by id."""
    ds = tfds.data_source(
        name,
        split=split,
        data_dir=data_dir,
        builder_kwargs=builder_kwargs,
        download_and_prepare_kwargs={
            "download_config": tfds.download.DownloadConfig(manual_dir=manual)
        },
    )
    assert ds.dataset_info.file_format.value == "array_record"
    return sorted((to_python(ds[i]) for i in range(len(ds))), key=lambda r: r["id"]), ds


def test_gsm8k(data_dir):
    manual = os.path.join(FIXTURES, "gsm8k")
    train, ds = read("r1jax_gsm8k", "train", data_dir, manual)
    assert train == [
        {
            "id": "gsm8k/train/1",
            "prompt": "Tom has 3 apples and buys 4 more. How many apples does he have?",
            "answer": "7",
            "source": "gsm8k",
            "solution": "Tom has 3 + 4 = <<3+4=7>>7 apples.",
        },
        {
            "id": "gsm8k/train/2",
            "prompt": "A box holds 250 pens. How many pens are in 6 boxes?",
            "answer": "1500",
            "source": "gsm8k",
            "solution": "6 boxes hold 6 * 250 = <<6*250=1500>>1500 pens.",
        },
    ]
    # rows 3 (no '####') and 4 (blank question) were skipped and counted in the metadata
    bad = ds.dataset_info.metadata["bad_rows"]["train"]
    assert bad["count"] == 2 and bad["by_field"] == {"answer": 1, "question": 1}
    assert "train.jsonl, row 3" in bad["examples"][0]
    test, _ = read("r1jax_gsm8k", "test", data_dir, manual)
    assert [(r["answer"], r["solution"]) for r in test] == [
        ("60", "12 * 5 = <<12*5=60>>60"),
        ("-5", "20 - 25 = -5"),
    ]
    assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_gsm8k_fail_policy_names_file_and_row(tmp_path):
    manual = os.path.join(FIXTURES, "gsm8k")
    with pytest.raises(DataError, match=r"train\.jsonl, row 3: field 'answer'.*####"):
        read("r1jax_gsm8k", "train", str(tmp_path), manual, on_bad_row="fail")


def test_math_full(data_dir):
    manual = os.path.join(FIXTURES, "math")
    train, ds = read("r1jax_math", "train", data_dir, manual, config="full")
    assert [(r["id"], r["answer"], r["level"], r["type"]) for r in train] == [
        ("train/algebra/1.json", "2", 1, "Algebra"),
        ("train/geometry/5.json", "\\frac{1}{2}", 0, "Geometry"),  # last box; "Level ?" -> 0
    ]
    assert train[0]["prompt"] == "Solve $2x + 3 = 7$."
    assert train[0]["solution"] == "Subtract 3 and divide by 2: $x = \\boxed{2}$."
    assert {r["source"] for r in train} == {"math"}
    bad = ds.dataset_info.metadata["bad_rows"]["train"]
    assert bad["count"] == 1 and "algebra/2.json, row 1: field 'solution'" in bad["examples"][0]
    test, _ = read("r1jax_math", "test", data_dir, manual, config="full")
    assert [(r["id"], r["answer"]) for r in test] == [
        ("test/prealgebra/3.json", "\\dfrac{5}{2}"),
        ("test/precalculus/807.json", "1"),  # "\boxed 1" without braces
    ]


def test_math500_joins_id_only_rows(data_dir):
    manual = os.path.join(FIXTURES, "math")
    test, ds = read("r1jax_math", "test", data_dir, manual, config="math500")
    assert [(r["id"], r["prompt"], r["answer"], r["level"], r["type"]) for r in test] == [
        ("test/algebra/42.json", "Find $3^2$.", "9", 1, "Algebra"),
        ("test/precalculus/807.json", "Compute $\\cos 0$.", "1", 1, "Precalculus"),
    ]
    bad = ds.dataset_info.metadata["bad_rows"]["test"]
    assert bad["by_field"] == {"unique_id": 1}
    assert "math500.jsonl, row 3" in bad["examples"][0]


def test_aime2024_parquet(tmp_path, data_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {
        "ID": ["2024-I-1", "2024-II-4"],
        "Problem": ["Find $1+2$.", "Find $6 \\cdot 7$."],
        "Solution": ["It is $3$.", "It is $42$."],
        "Answer": [3, 42],
    }
    pq.write_table(pa.table(rows), str(tmp_path / "aime_2024_problems.parquet"))
    test, _ = read("r1jax_aime", "test", data_dir, str(tmp_path), config="2024")
    assert test == [
        {
            "id": "2024-I-1",
            "prompt": "Find $1+2$.",
            "answer": "3",
            "source": "aime",
            "solution": "It is $3$.",
            "year": 2024,
        },
        {
            "id": "2024-II-4",
            "prompt": "Find $6 \\cdot 7$.",
            "answer": "42",
            "source": "aime",
            "solution": "It is $42$.",
            "year": 2024,
        },
    ]


def test_aime2025_two_files(data_dir):
    test, ds = read("r1jax_aime", "test", data_dir, os.path.join(FIXTURES, "aime"), config="2025")
    assert [(r["id"], r["answer"]) for r in test] == [
        ("aime2025/aime2025-I:1", "24"),
        ("aime2025/aime2025-I:2", "9"),  # "009" canonicalised
        ("aime2025/aime2025-II:2", "33"),
    ]
    bad = ds.dataset_info.metadata["bad_rows"]["test"]
    assert "aime2025-II.jsonl, row 1: field 'answer'" in bad["examples"][0]  # 1001 > 999


def test_countdown_builder_matches_generator(data_dir):
    from r1jax.data.countdown import CountdownSpec, generate_countdown

    config = countdown_config(seed=3, train_size=6, test_size=4, max_numbers=3)
    train, _ = read("r1jax_countdown", "train", data_dir, None, config=config)
    test, _ = read("r1jax_countdown", "test", data_dir, None, config=config)
    spec = CountdownSpec(seed=3, max_numbers=3)
    expected_test = generate_countdown(spec, "test", 4)
    assert test == sorted(expected_test, key=lambda r: r["id"])
    assert len(train) == 6 and all(len(r["numbers"]) == 3 for r in train)
    assert all(isinstance(r["target"], int) and r["answer"] == str(r["target"]) for r in train)


def test_the_default_countdown_config_builds(tmp_path):
    """``data.name='countdown'`` with no options (base_config's data) is the registered
    default config: tfds refused a new object of the same name."""
    import tensorflow_datasets as tfds

    from r1jax.data.builders.countdown import R1jaxCountdown

    assert countdown_config() is R1jaxCountdown.BUILDER_CONFIGS[0]
    builder = tfds.builder("r1jax_countdown", config=countdown_config(), data_dir=str(tmp_path))
    assert builder.builder_config.test_size == 1000
    assert countdown_config(seed=5) is countdown_config(seed=5)


def test_load_source_names(data_dir):
    src = load_source(
        {"name": "math500", "data_dir": data_dir, "manual_dir": os.path.join(FIXTURES, "math")}
    )
    assert len(src) == 2 and src.skipped == 1
    assert sorted(r["answer"] for r in src) == ["1", "9"]
    cd = load_source(
        {
            "name": "countdown",
            "split": "test",
            "data_dir": data_dir,
            "countdown": {"seed": 3, "train_size": 6, "test_size": 4, "max_numbers": 3},
        }
    )
    assert len(cd) == 4 and isinstance(cd[0]["numbers"], list) and cd[-1] == cd[3]
    with pytest.raises(IndexError):
        cd[4]
    cfg = {"name": "countdown", "data_dir": data_dir, "split": "test[:2]"}
    head = load_source(
        {**cfg, "countdown": {"seed": 3, "train_size": 6, "test_size": 4, "max_numbers": 3}}
    )
    assert list(head) == cd[:2] and head.skipped == 0
    from r1jax.config import ConfigError

    with pytest.raises(ConfigError, match=r"^data name='countdown' split='tset': Unknown split"):
        small = {"seed": 3, "train_size": 6, "test_size": 4, "max_numbers": 3}
        load_source({**cfg, "split": "tset", "countdown": small})


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "gsm9k"}, "unknown name 'gsm9k'"),
        ({"name": "gsm8k", "fieldmap": {}}, r"unknown keys \['fieldmap'\]"),
        ({"name": "gsm8k", "path": "x.jsonl"}, r"keys \['path'\] do not apply"),
        ({"name": "jsonl"}, "needs 'path'"),
        ({"name": "parquet", "path": "a.jsonl"}, "not .parquet"),
        ({"name": "gsm8k", "on_bad_row": "ignore"}, r"on_bad_row='ignore': one of \["),
        ({"name": "countdown", "countdown": {"sed": 1}}, r"unknown countdown options \['sed'\]"),
    ],
)
def test_load_source_config_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        load_source(cfg)


def test_missing_manual_files_named(tmp_path):
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="train.jsonl and test.jsonl"):
        load_source({"name": "gsm8k", "data_dir": str(tmp_path / "d"), "manual_dir": str(tmp_path)})


def test_no_network_names_the_way_out(monkeypatch, tmp_path):
    """Preparing a dataset offline fails with one message naming data_dir and manual_dir."""
    import requests

    from r1jax.data import sources

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'raw.githubusercontent.com'")

    monkeypatch.setattr(sources.tfds, "data_source", offline)
    with pytest.raises(FileNotFoundError, match=r"name='gsm8k'.*ConnectionError.*manual_dir"):
        sources.load_source({"name": "gsm8k", "data_dir": str(tmp_path)})
