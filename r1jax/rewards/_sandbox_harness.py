"""Runs inside the code-test sandbox subprocess (``python -I _harness.py`` in a temp dir).

Reads ``config.json`` (limits, tests, isolation) and ``solution.py`` from the working
directory and a secret nonce from stdin, opens ``results.txt``, then confines itself: a
network namespace of its own (no interfaces up), the sandbox user (``config["uid"]``, when
started as root), the ``work/`` directory, resource limits and best-effort Python-level
isolation. It appends ``<nonce> ISOLATION uid=U net=0|1``, then (unless isolation was
required and is missing) executes the solution and each test, appending ``<nonce> PASS i`` /
``<nonce> FAIL i`` lines. User output goes to /dev/null. This file is copied verbatim into
the sandbox; it must only use the standard library.
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


CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


def _unshare(flags: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).unshare(flags) == 0
    except Exception:
        return False


def _confine(config: dict) -> tuple[int, bool]:
    """A network namespace of its own and the sandbox user, as far as the kernel allows:
    ``(uid, network cut)``. As root the namespace needs no user namespace; otherwise (or
    where a container denies it) one is made, after the drop, as the sandbox user."""
    net = bool(config["isolate"]) and _unshare(CLONE_NEWNET)
    uid = config.get("uid")
    if uid is not None:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        except OSError:  # (e.g. a uid the container does not map: reported, not fatal)
            pass
    if config["isolate"] and not net:
        net = _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    return os.getuid(), net


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

    def report(message: str) -> None:
        with contextlib.suppress(Exception):
            results.write(f"{nonce} {message}\n")

    uid, net = _confine(config)
    os.chdir("work")
    report(f"ISOLATION uid={uid} net={int(net)}")
    if config["require"] and not (net and (config.get("uid") is None or uid == config["uid"])):
        return
    _limit(config)
    _isolate()

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
