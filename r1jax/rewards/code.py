"""Code reward: run the completion's last ```python block against assert tests.

The candidate runs in a fresh ``python -I`` subprocess with an empty environment, resource
limits (address space, CPU time, file size, process count, no core dumps), a wall-clock
timeout, stdin/stdout/stderr on /dev/null, sockets, ``subprocess`` and ``os.fork``/``exec*``
replaced by functions that raise, and ``PR_SET_PDEATHSIG`` so it dies with its parent. The
reward workers answer the trainer in JSON (never pickles) and are non-dumpable.

Kernel-level confinement (``isolation="auto"``, the default; :func:`check_sandbox` reports
at start-up what this host allows, ``"require"`` refuses to run without all of it):
- network, process-id and mount namespaces of its own (as root directly; otherwise through a
  user namespace, where the kernel allows unprivileged ones): no interface is up, so no
  connection anywhere, also not through ``ctypes``; it runs as process 1 and its /proc
  lists only its own processes, so it cannot see or signal the trainer or other candidates;
- as root, uid/gid 65534 ("nobody") with no supplementary groups, in a ``work/`` directory
  of its own: it cannot read the tests (``config.json``, mode 0600) or anything of root's
  that others may not read, nor write outside world-writable places, nor signal or read
  ``/proc`` of the trainer, and ``RLIMIT_NPROC`` = 0 stops every fork (Linux does not
  enforce it for root). It needs an interpreter whose standard library others can read
  (``python=``, e.g. ``/usr/bin/python3``: one under /root is not).

This is still not a security boundary, and a policy under RL pressure searches for holes.
Without root the program runs as the trainer's user: it can read what the trainer can
(its ``/proc`` included) and write files anywhere the user may. As any user it can still
replace builtins or a module the tests use, define an object whose ``__eq__`` is always
true, and reach the harness's frame (and its nonce); it sees the host's filesystem as its
user may, and the kernel's whole system-call surface (no seccomp). Use it only where a run's
host and credentials have little to protect, inspect high-reward samples, or put a real
sandbox (e.g. nsjail, gVisor) behind a reward of your own.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import secrets
import select
import shutil
import signal
import stat
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


SANDBOX_UID = 65534  # "nobody": the user candidates run as when the trainer is root
ISOLATION_MODES = ("auto", "require", "off")


@dataclasses.dataclass(frozen=True)
class Isolation:
    """What confines a candidate program: its user id, whether its network is cut, and
    whether it sees only its own processes (a PID namespace with its own /proc)."""

    uid: int
    network_cut: bool
    own_processes: bool

    def describe(self) -> str:
        user = "the sandbox user" if self.uid == SANDBOX_UID else "the trainer's user"
        net = "no network" if self.network_cut else "the host's network"
        procs = "its own" if self.own_processes else "the host's"
        return f"candidates run as uid {self.uid} ({user}) with {net} and {procs} processes"


def run_tests(
    code: str,
    setup: list[str],
    tests: list[str],
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    file_size_mb: int = 16,
    isolation: str = "auto",
    python: str = "",
) -> tuple[int, bool]:
    """Run ``code`` then each test in the sandbox: ``(number passed, timed_out)``.

    Tests run in order in one process; on a timeout the tests passed so far count.
    ``isolation`` and ``python``: as :func:`code_tests`'.
    """
    said, timed_out = _run_sandbox(
        code, setup, tests, timeout_s, memory_mb, file_size_mb, isolation, python
    )
    passed = {int(m.group(1)) for m in map(_PASS_RE.fullmatch, said) if m}
    return len(passed & set(range(len(tests)))), timed_out


@functools.cache
def sandbox_isolation(isolation: str = "auto", python: str = "") -> Isolation:
    """The :class:`Isolation` a candidate gets here, read from an empty sandbox run (once
    per process and setting: what the host allows does not change within a run)."""
    said, _ = _run_sandbox("", [], [], 30.0, 1024, 1, isolation, python)
    for line in said:
        if m := _ISOLATION_RE.fullmatch(line):
            return Isolation(int(m.group(1)), m.group(2) == "1", m.group(3) == "1")
    raise RuntimeError(f"the code sandbox ({python or sys.executable}) did not start: {said}")


def check_sandbox(isolation: str = "auto", python: str = "", **_: Any) -> str | None:
    """``code_tests``' start-up check: ``ValueError`` for bad settings or, with
    ``isolation="require"``, missing isolation; else a warning naming what is missing
    (``None`` when nothing is)."""
    if isolation not in ISOLATION_MODES:
        raise ValueError(f"code_tests: isolation must be one of {ISOLATION_MODES}, got "
                         f"{isolation!r}")  # fmt: skip
    if python and not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise ValueError(f"code_tests: python={python!r} is not an executable file")
    if isolation == "off":
        return None
    got = sandbox_isolation(isolation, python)
    missing = []
    if not got.network_cut:
        missing.append("namespaces (the kernel or container refused them)")
    elif not got.own_processes:
        missing.append("a /proc of its own (mounting it failed)")
    if os.geteuid() == 0 and got.uid != SANDBOX_UID:
        why = _stdlib_blocker(python or sys.executable) or "setuid failed"
        missing.append(f"uid {SANDBOX_UID}: {why}")
    if not missing:
        return None
    said = f"sandbox: {got.describe()}; missing: {'; '.join(missing)}"
    if isolation == "require":
        raise ValueError(f"{said} (isolation='require')")
    return f"{said}. See r1jax/rewards/code.py"


_PASS_RE = re.compile(r"PASS (\d+)")
_ISOLATION_RE = re.compile(r"ISOLATION uid=(\d+) net=([01]) pid=([01])")


def _run_sandbox(
    code: str,
    setup: list[str],
    tests: list[str],
    timeout_s: float,
    memory_mb: int,
    file_size_mb: int,
    isolation: str,
    python: str,
) -> tuple[list[str], bool]:
    """One harness run: ``(its report lines without the nonce, timed_out)``."""
    python = python or sys.executable
    uid = None
    if isolation != "off" and os.geteuid() == 0:
        if not _stdlib_blocker(python):
            uid = SANDBOX_UID
        elif isolation == "require":
            raise ValueError(f"code_tests: isolation='require': {_stdlib_blocker(python)}")
    tmp = tempfile.mkdtemp(prefix="r1jax_code_")
    try:
        os.chmod(tmp, 0o711)  # the sandbox user may enter work/, not list or write here
        work = os.path.join(tmp, "work")
        os.mkdir(work, 0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        shutil.copyfile(_HARNESS, os.path.join(tmp, "_harness.py"))
        config = {
            "tests": tests,
            "setup": setup,
            "memory_mb": memory_mb,
            "cpu_s": max(1, math.ceil(timeout_s)),
            "file_size_mb": file_size_mb,
            "uid": uid,
            "isolate": isolation != "off",
            "require": isolation == "require",
        }
        _write_private(os.path.join(tmp, "solution.py"), code)
        _write_private(os.path.join(tmp, "config.json"), json.dumps(config))
        nonce = secrets.token_hex(16)
        proc = subprocess.Popen(
            [python, "-I", "_harness.py"],
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
        mine = f"{nonce} "
        return [line[len(mine) :] for line in text.splitlines() if line.startswith(mine)], timed_out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_private(path: str, text: str) -> None:
    """``text`` to a new file that only its owner may read (the harness reads it before it
    drops to the sandbox user)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        f.write(text)


@functools.cache
def _stdlib_blocker(python: str) -> str | None:
    """Why the sandbox user could not import ``python``'s standard library (a directory on
    the way that others may not enter or read, e.g. an interpreter under /root), or None."""
    paths = "import sysconfig as s; print(s.get_path('stdlib')); print(s.get_path('platstdlib'))"
    run = subprocess.run([python, "-I", "-c", paths], capture_output=True, text=True, check=True,
                         env={}, timeout=60)  # fmt: skip
    for lib in dict.fromkeys(run.stdout.splitlines()):
        path = Path(lib)
        for d in [path, *path.parents]:
            needs = stat.S_IXOTH | (stat.S_IROTH if d == path else 0)
            if d.exists() and (d.stat().st_mode & needs) != needs:
                return (
                    f"{python}'s standard library {lib} is closed to other users at {d} "
                    "(use python= an interpreter others can read, e.g. /usr/bin/python3)"
                )
    return None


@register_reward("code_tests", value_range=(0.0, 1.0), check=check_sandbox)
def code_tests(
    completion: str,
    row: dict[str, Any],
    mode: str = "fraction",
    timeout_s: float = 5.0,
    memory_mb: int = 1024,
    file_size_mb: int = 16,
    isolation: str = "auto",
    python: str = "",
) -> float:
    """Score the last ```python block of the completion against ``row["tests"]``.

    ``mode="fraction"``: share of tests passed; ``mode="all"``: 1.0 only if all pass.
    No code block, or no tests, scores 0. ``timeout_s`` is the wall-clock budget for the
    whole run (give the scorer's spec a larger ``timeout_s``). Range [0, 1].

    ``isolation``: ``"auto"`` confines candidates as far as this host allows (namespaces; as
    root, uid 65534) and the scorer warns at start-up of what is missing;
    ``"require"`` refuses to start without all of it; ``"off"``: the trainer's user and
    network. ``python``: the interpreter that runs candidates (default: the trainer's); as
    root, one whose standard library other users can read, e.g. ``/usr/bin/python3``.
    """
    if mode not in ("fraction", "all"):
        raise ValueError(f"code_tests: mode must be 'fraction' or 'all', got {mode!r}")
    if "tests" not in row:
        raise ValueError(f"code row has no 'tests' field (keys: {sorted(row)})")
    setup, tests = split_tests(row["tests"])
    code = extract_code(completion)
    if code is None or not tests:
        return 0.0
    passed, _ = run_tests(code, setup, tests, timeout_s, memory_mb, file_size_mb, isolation, python)
    if mode == "all":
        return 1.0 if passed == len(tests) else 0.0
    return passed / len(tests)
