"""The code-test reward: sandboxed execution of the last ```python block."""

import dataclasses
import os
import socket
import sys
import time

import pytest

from r1jax.rewards import RewardScorer, code, code_tests, registry
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


# Kernel-level confinement (isolation="auto"): each check passes with isolation="off" and
# fails confined, so it shows both that the probe works and that the confinement holds.
OPEN_PYTHON = "/usr/bin/python3"  # an interpreter the sandbox user can read (not under /root)


def _confined() -> code.Isolation:
    got = code.sandbox_isolation()
    if not got.network_cut:
        pytest.skip("this kernel or container allows no network namespace here")
    return got


def test_candidates_see_only_their_own_processes():
    if not _confined().own_processes:
        pytest.skip("this kernel or container lets no namespace mount its own /proc")
    probe = block(
        "import os\n"
        "def processes():\n"
        "    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())"
    )
    alone = {"tests": ["assert processes() == [1]", "assert os.getpid() == 1"]}
    assert code_tests(probe, alone, isolation="off") == 0.0
    assert code_tests(probe, alone) == 1.0
    trainer = {"tests": [f"assert {os.getpid()} in processes()"]}  # (this process)
    assert code_tests(probe, trainer, isolation="off") == 1.0
    assert code_tests(probe, trainer) == 0.0


def test_network_is_cut_even_through_ctypes():
    _confined()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        connect = block(
            "import ctypes, struct\n"
            "def connects():\n"
            "    libc = ctypes.CDLL(None)\n"
            "    fd = libc.socket(2, 1, 0)\n"
            f"    addr = struct.pack('<H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1])\n"
            "    return libc.connect(fd, addr + bytes(8), 16) == 0"
        )
        tests = {"tests": ["assert connects()"]}
        assert code_tests(connect, tests, isolation="off") == 1.0
        assert code_tests(connect, tests) == 0.0


root_only = pytest.mark.skipif(
    os.geteuid() != 0 or code._stdlib_blocker(OPEN_PYTHON) is not None,
    reason="the sandbox user needs root and an interpreter others can read",
)


@root_only
def test_as_root_candidates_run_as_nobody_and_cannot_read_tests_or_fork(tmp_path):
    assert code.sandbox_isolation(python=OPEN_PYTHON) == code.Isolation(
        code.SANDBOX_UID, True, True
    )
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o600)
    probe = block(
        "import ctypes, os\n"
        "def reads_tests():\n"
        "    return 'assert' in open('../config.json').read()\n"
        f"def reads_secret():\n    return open({str(secret)!r}).read() == 's3cret'\n"
        f"def writes_next_to_it():\n    open({str(tmp_path / 'planted')!r}, 'w').close()\n"
        "    return True\n"
        "def forks():\n"
        "    pid = ctypes.CDLL(None).fork()\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    return pid > 0\n"
        "def is_root():\n    return os.getuid() == 0"
    )
    checks = ["reads_tests", "reads_secret", "writes_next_to_it", "forks", "is_root"]
    each = [{"tests": [f"assert {name}()"]} for name in checks]
    as_trainer = [code_tests(probe, t, isolation="off", python=OPEN_PYTHON) for t in each]
    confined = [code_tests(probe, t, python=OPEN_PYTHON) for t in each]
    assert dict(zip(checks, as_trainer, strict=True)) == dict.fromkeys(checks, 1.0)
    assert dict(zip(checks, confined, strict=True)) == dict.fromkeys(checks, 0.0)
    os.remove(tmp_path / "planted")  # (written by the unconfined run only)
    solved = block("import heapq, collections\ndef add(a, b):\n    return a + b")
    assert code_tests(solved, ADD_TESTS, python=OPEN_PYTHON) == 1.0  # stdlib still imports
    assert code_tests(solved, ADD_TESTS, isolation="require", python=OPEN_PYTHON) == 1.0
    if code._stdlib_blocker(sys.executable):  # (e.g. a Python under /root)
        with pytest.raises(ValueError, match="isolation='require': .* closed to other users"):
            code_tests(solved, ADD_TESTS, isolation="require")


def test_isolation_probe_runs_once_per_setting(monkeypatch):
    runs = []
    real = code._run_sandbox
    monkeypatch.setattr(code, "_run_sandbox", lambda *a: runs.append(a[-2:]) or real(*a))
    code.sandbox_isolation.cache_clear()
    first = [code.sandbox_isolation(), code.sandbox_isolation("off")]
    assert [code.sandbox_isolation(), code.sandbox_isolation("off")] == first
    assert runs == [("auto", ""), ("off", "")]
    assert first[1] == code.Isolation(os.geteuid(), False, False)


def test_start_up_check_warns_or_refuses_what_is_missing(monkeypatch):
    with pytest.raises(ValueError, match="isolation must be one of"):
        code.check_sandbox(isolation="strict")
    with pytest.raises(ValueError, match="python='/no/such/python' is not an executable"):
        code.check_sandbox(python="/no/such/python")
    assert code.check_sandbox(isolation="off") is None
    monkeypatch.setattr(code, "sandbox_isolation", lambda *a: code.Isolation(0, False, False))
    monkeypatch.setattr(code, "_stdlib_blocker", lambda python: "closed at /root")
    monkeypatch.setattr(code.os, "geteuid", lambda: 0)
    warning = code.check_sandbox()
    assert "with the host's network and the host's processes" in warning
    assert "missing: namespaces (the kernel" in warning
    assert "uid 65534: closed at /root" in warning
    with pytest.raises(ValueError, match="missing: namespaces.*'require'"):
        code.check_sandbox(isolation="require")
    monkeypatch.setattr(code, "sandbox_isolation", lambda *a: code.Isolation(65534, True, False))
    assert "missing: a /proc of its own" in code.check_sandbox()
    monkeypatch.setattr(code, "sandbox_isolation", lambda *a: code.Isolation(65534, True, True))
    assert code.check_sandbox(isolation="require") is None


def test_scorer_runs_the_check_once_per_spec_and_names_it(monkeypatch, caplog):
    with pytest.raises(ValueError, match="reward spec 'code_tests': .*isolation must be one of"):
        RewardScorer([("code_tests", 1.0, {"isolation": "strict"})], num_workers=0)
    calls = []

    def check(**kwargs):
        calls.append(kwargs)
        return "half confined"

    monkeypatch.setattr(code, "check_sandbox", check)
    monkeypatch.setitem(
        registry._REGISTRY,
        "code_tests",
        dataclasses.replace(registry._REGISTRY["code_tests"], check=check),
    )
    spec = ("code_tests", 1.0, {"timeout_s": 3.0})
    with caplog.at_level("WARNING"):
        RewardScorer([spec], routes={"code": [spec]}, num_workers=0).close()
    assert calls == [{"timeout_s": 3.0}]
    assert "reward 'code_tests': half confined" in caplog.text
