"""Runs inside the code-test sandbox subprocess (``python -I _harness.py`` in a temp dir).

Reads ``config.json`` (limits, tests) and ``solution.py`` from the working directory and a
secret nonce from stdin, applies resource limits and best-effort isolation, executes the
solution and then each test, and appends ``<nonce> PASS i`` / ``<nonce> FAIL i`` lines to
``results.txt``. User output goes to /dev/null. This file is copied verbatim into the
sandbox; it must only use the standard library.
"""

import contextlib
import json
import os
import resource
import signal
import sys


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() == 1:
        os._exit(1)


def _limit(config: dict) -> None:
    mem = int(config["memory_mb"]) * 1024 * 1024
    cpu = int(config["cpu_s"])
    fsize = int(config["file_size_mb"]) * 1024 * 1024
    for res, value in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, fsize),
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_CORE, 0),
    ):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail instead of killing


def _isolate() -> None:
    def denied(*args, **kwargs):
        raise PermissionError("disabled in the r1jax code sandbox")

    import _socket
    import posix
    import socket
    import subprocess

    processes = ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill",
                 "killpg", "setsid", "setpgid")  # fmt: skip
    for mod, names in (
        (socket, ("socket", "create_connection", "getaddrinfo", "socketpair", "fromfd")),
        (_socket, ("socket", "SocketType", "getaddrinfo", "socketpair")),
        (subprocess, ("Popen", "run", "call", "check_call", "check_output")),
        (os, processes),
        (posix, processes),  # (os's functions are posix's: patch both names)
    ):
        for name in names:
            if hasattr(mod, name):
                setattr(mod, name, denied)
    for mod in (os, posix):
        for name in dir(mod):
            if name.startswith(("exec", "spawn")):
                setattr(mod, name, denied)


def _main() -> None:
    nonce = sys.stdin.readline().strip()
    _die_with_parent()
    with open("config.json") as f:
        config = json.load(f)
    with open("solution.py") as f:
        source = f.read()
    results = open("results.txt", "a", buffering=1)  # noqa: SIM115
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _limit(config)
    _isolate()

    def report(message: str) -> None:
        with contextlib.suppress(Exception):
            results.write(f"{nonce} {message}\n")

    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    for i, setup in enumerate([source, *config["setup"]]):
        try:
            exec(compile(setup, "solution.py" if i == 0 else "setup", "exec"), namespace)
        except BaseException:
            report("SETUPFAIL")
            return
    for i, test in enumerate(config["tests"]):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
            report(f"PASS {i}")
        except BaseException:
            report(f"FAIL {i}")
    report("DONE")


if __name__ == "__main__":
    _main()
    os._exit(0)
