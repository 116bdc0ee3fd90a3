"""Code reward: run the completion's last ```python block against assert tests.

The candidate runs in a fresh ``python -I`` subprocess in a temporary directory with an
empty environment, resource limits (address space, CPU time, file size, process count,
no core dumps), a wall-clock timeout, stdin/stdout/stderr on /dev/null, sockets,
``subprocess`` and ``os.fork``/``exec*`` replaced by functions that raise, and
``PR_SET_PDEATHSIG`` so it dies with its parent. The reward workers answer the trainer in
JSON (never pickles) and are non-dumpable.

This is not a security boundary, and a policy under RL pressure searches for holes. The
program runs as the trainer's user, in the same filesystem and ``/proc``, in the process
that checks it. Measured ways a completion scores 1.0 without solving the task: reading
``config.json`` (which holds the tests), replacing builtins or an imported module the tests
use, defining an object whose ``__eq__`` is always true, reaching the harness's frame.
Measured escapes: writing files anywhere the user may (the harness is copied from the
package on each call, so a program can rewrite it for every later call), reading the
trainer's environment through ``/proc`` (same user), forking through ``ctypes``, opening
sockets through other modules. Use it only where a run's host and credentials have
nothing to protect, with a rollout inspection of high-reward samples, or put a real sandbox
(another user, namespaces, seccomp; e.g. nsjail, gVisor) behind a reward of your own.
As root, ``RLIMIT_NPROC`` is not enforced by Linux.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from r1jax.rewards.registry import register_reward

_CODE_BLOCK_RE = re.compile(r"```(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL)
_HARNESS = Path(__file__).with_name("_sandbox_harness.py")
MAX_RESULT_BYTES = 1 << 16


def extract_code(completion: str) -> str | None:
    """Body of the last closed ```python (or ```py) block, or ``None``."""
    blocks = _CODE_BLOCK_RE.findall(completion)
    return blocks[-1] if blocks else None


def split_tests(tests: Any) -> tuple[list[str], list[str]]:
    """``(setup, tests)`` from ``row["tests"]``.

    A list gives one test per element. A string is split into top-level statements:
    each ``assert`` is a test, every other statement (imports, helpers) is setup run
    before the tests. A string without a top-level ``assert`` (its asserts in a function
    or a loop, e.g. HumanEval's ``def check(candidate): ...`` then ``check(f)``), or that
    does not parse, is a single test.
    """
    if isinstance(tests, str):
        try:
            module = ast.parse(tests)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return [], [tests]
        setup = [ast.unparse(s) for s in module.body if not isinstance(s, ast.Assert)]
        asserts = [ast.unparse(s) for s in module.body if isinstance(s, ast.Assert)]
        if not asserts:  # asserts inside a function or loop (HumanEval's check(candidate)):
            return [], [tests]  # the whole string is one test
        return setup, asserts
    if isinstance(tests, list | tuple) and all(isinstance(t, str) for t in tests):
        return [], list(tests)
    raise ValueError(f"row 'tests' must be a string or a list of strings, got {tests!r:.200}")


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for child ``pid`` to exit *without reaping it*."""
    deadline = time.monotonic() + timeout_s
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # old kernel: poll
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
            time.sleep(0.005)
        return False
    try:
        return bool(select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0])
    finally:
        os.close(fd)


def run_tests(
    code: str,
    setup: list[str],
    tests: list[str],
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    file_size_mb: int = 16,
) -> tuple[int, bool]:
    """Run ``code`` then each test in the sandbox: ``(number passed, timed_out)``.

    Tests run in order in one process; on a timeout the tests passed so far count.
    """
    tmp = tempfile.mkdtemp(prefix="r1jax_code_")
    try:
        shutil.copyfile(_HARNESS, os.path.join(tmp, "_harness.py"))
        Path(tmp, "solution.py").write_text(code, encoding="utf-8", errors="replace")
        config = {
            "tests": tests,
            "setup": setup,
            "memory_mb": memory_mb,
            "cpu_s": max(1, math.ceil(timeout_s)),
            "file_size_mb": file_size_mb,
        }
        Path(tmp, "config.json").write_text(json.dumps(config), encoding="utf-8")
        nonce = secrets.token_hex(16)
        proc = subprocess.Popen(
            [sys.executable, "-I", "_harness.py"],
            cwd=tmp,
            env={},
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:  # (from here on: a timeout signal in the worker still kills the group)
            try:
                assert proc.stdin is not None
                proc.stdin.write(nonce.encode() + b"\n")
                proc.stdin.close()
            except OSError:
                pass
            timed_out = not _wait_unreaped(proc.pid, timeout_s)
        finally:
            # The leader is not reaped yet, so its process group id cannot be reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        results = Path(tmp, "results.txt")
        size = MAX_RESULT_BYTES + 64 * len(tests)  # ("<32 hex> PASS <i>" lines)
        text = results.open("rb").read(size).decode(errors="replace") if results.exists() else ""
        pass_re = re.compile(rf"{nonce} PASS (\d+)")
        passed = {int(m.group(1)) for m in map(pass_re.fullmatch, text.splitlines()) if m}
        return len(passed & set(range(len(tests)))), timed_out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@register_reward("code_tests", value_range=(0.0, 1.0))
def code_tests(
    completion: str,
    row: dict[str, Any],
    mode: str = "fraction",
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    file_size_mb: int = 16,
) -> float:
    """Score the last ```python block of the completion against ``row["tests"]``.

    ``mode="fraction"``: share of tests passed; ``mode="all"``: 1.0 only if all pass.
    No code block, or no tests, scores 0. ``timeout_s`` is the wall-clock budget for the
    whole run (give the scorer's spec a larger ``timeout_s``). Range [0, 1].
    """
    if mode not in ("fraction", "all"):
        raise ValueError(f"code_tests: mode must be 'fraction' or 'all', got {mode!r}")
    if "tests" not in row:
        raise ValueError(f"code row has no 'tests' field (keys: {sorted(row)})")
    setup, tests = split_tests(row["tests"])
    code = extract_code(completion)
    if code is None or not tests:
        return 0.0
    passed, _ = run_tests(code, setup, tests, timeout_s, memory_mb, file_size_mb)
    if mode == "all":
        return 1.0 if passed == len(tests) else 0.0
    return passed / len(tests)
