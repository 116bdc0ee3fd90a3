"""The code-test reward: sandboxed execution of the last ```python block."""

import time

import pytest

from r1jax.rewards import code_tests
from r1jax.rewards.code import extract_code, split_tests

ADD_TESTS = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]}


def block(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\n"


def test_extract_code_and_split_tests():
    text = "```python\na = 1\n```\ntext\n```py\nb = 2\n```\n```python\nunclosed"
    assert extract_code(text) == "b = 2\n"
    assert extract_code("```\nplain\n```") is None
    assert split_tests("import math\nassert f(1) == 1\nx = 2\nassert f(x) == 2") == (
        ["import math", "x = 2"],
        ["assert f(1) == 1", "assert f(x) == 2"],
    )
    assert split_tests(["assert a", "assert b"]) == ([], ["assert a", "assert b"])
    assert split_tests("assert (") == ([], ["assert ("])
    with pytest.raises(ValueError, match="tests"):
        split_tests(3)


CASES = [
    ("def add(a, b):\n    return a + b", 1.0),
    ("def add(a, b):\n    return a * b if a != 2 else 4", 1 / 3),  # only add(2, 2) passes
    ("def add(a, b):\n    return 0", 1 / 3),  # add(-1, 1) == 0 passes
    ("def add(a, b)\n    return a + b", 0.0),  # syntax error
    ("raise SystemExit(0)", 0.0),  # exits before the tests
    ("import sys\ndef add(a, b):\n    sys.exit(0)", 0.0),
    ("def add(a, b):\n    print('PASS 0'); print('x' * 10**6)\n    return a + b", 1.0),
    ("x = bytearray(8 * 1024**3)\ndef add(a, b):\n    return a + b", 0.0),  # memory limit
    (
        "import socket\ndef add(a, b):\n    socket.create_connection(('127.0.0.1', 9))\n"
        "    return a + b",
        0.0,
    ),
    ("import subprocess\nsubprocess.run(['true'])\ndef add(a, b):\n    return a + b", 0.0),
    (  # (os.fork is denied; posix.fork, the same function, forked before)
        "import posix\ntry:\n    posix.fork()\nexcept PermissionError:\n"
        "    def add(a, b):\n        return a + b",
        1.0,
    ),
    (  # a raw socket type (the socket functions were denied, the type was not)
        "import _socket\ntry:\n    _socket.SocketType(2, 1)\nexcept PermissionError:\n"
        "    def add(a, b):\n        return a + b",
        1.0,
    ),
    (  # empty environment (Python itself may only add LC_CTYPE)
        "import os\nassert set(os.environ) <= {'LC_CTYPE'}\ndef add(a, b):\n    return a + b",
        1.0,
    ),
]


@pytest.mark.parametrize(("code", "expected"), CASES)
def test_code_tests(code, expected):
    assert code_tests(block(code), ADD_TESTS) == pytest.approx(expected)


def test_code_tests_all_mode_and_no_code():
    partial = block("def add(a, b):\n    return 0")
    assert code_tests(partial, ADD_TESTS, mode="all") == 0.0
    assert code_tests(block("def add(a, b):\n    return a + b"), ADD_TESTS, mode="all") == 1.0
    assert code_tests("def add(a, b): return a + b", ADD_TESTS) == 0.0  # no code block
    assert code_tests(block("x = 1"), {"tests": []}) == 0.0
    with pytest.raises(ValueError, match="tests"):
        code_tests(block("x = 1"), {})
    with pytest.raises(ValueError, match="mode"):
        code_tests(block("x = 1"), ADD_TESTS, mode="most")


def test_code_tests_string_tests_with_setup():
    tests = {
        "tests": "import math\nassert area(1) == math.pi\nassert area(0) == 0\nassert area(2) == 1"
    }
    assert (
        code_tests(block("import math\ndef area(r):\n    return math.pi * r * r"), tests) == 2 / 3
    )


def test_tests_in_a_function_and_many_tests_count():
    """HumanEval-style tests (asserts inside check(candidate)) are one test (scored 0.0 before:
    no top-level assert, no test), and 2,000 tests all count (0.7745 before: the result file
    was read up to 64 KB)."""
    humaneval = "def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)"
    assert split_tests(humaneval) == ([], [humaneval])
    right, wrong = block("def add(a, b):\n    return a + b"), block("def add(a, b):\n    return 0")
    assert code_tests(right, {"tests": humaneval}) == 1.0
    assert code_tests(wrong, {"tests": humaneval}) == 0.0
    many = {"tests": [f"assert add({i}, 1) == {i + 1}" for i in range(2000)]}
    assert code_tests(right, many, timeout_s=20.0) == 1.0


def test_code_tests_infinite_loop_keeps_earlier_passes():
    code = "def add(a, b):\n    while a == 2:\n        pass\n    return a + b"
    start = time.monotonic()
    assert code_tests(block(code), ADD_TESTS, timeout_s=1.0) == pytest.approx(2 / 3)
    assert time.monotonic() - start < 3.0


def test_code_tests_runs_in_a_temp_dir_with_file_size_limit(tmp_path):
    code = (
        "import os\n"
        "def add(a, b):\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        f.write(b'x' * (4 * 1024 * 1024))\n"
        "    return a + b if 'r1jax_code_' in os.getcwd() else 0"
    )
    assert code_tests(block(code), ADD_TESTS, file_size_mb=16) == 1.0
    assert code_tests(block(code), ADD_TESTS, file_size_mb=1) == 0.0  # write fails: EFBIG
