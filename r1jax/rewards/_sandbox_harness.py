"""Runs inside the code-test sandbox subprocess (``python -I _harness.py`` in a temp dir).

Reads ``config.json`` (limits, tests, isolation) and ``solution.py`` from the working
directory and a secret nonce from stdin, opens ``results.txt``, then confines itself to
``work/``: network, process-id and mount namespaces of its own (no interface up; it runs as
process 1 with a /proc of its own namespace), the sandbox user (``config["uid"]``, when
started as root), resource limits and best-effort Python-level isolation. It appends
``<nonce> ISOLATION uid=U net=0|1 pid=0|1``, then (unless isolation was required and is
missing) executes the solution and each test, appending ``<nonce> PASS i`` / ``<nonce> FAIL
i`` lines. User output goes to /dev/null. This file is copied verbatim into the sandbox; it
must only use the standard library.
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


CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
SPACES = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS  # network, process ids, mounts
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> bool:
    try:
        return _libc().unshare(flags) == 0
    except Exception:
        return False


def _become_pid_1() -> bool:
    """Forks into the new PID namespace: the parent waits for the child and exits; the child
    (process 1 there) mounts a /proc of that namespace. True when /proc is its own."""
    child = os.fork()
    if child:
        try:
            os.waitpid(child, 0)
        finally:
            os._exit(0)
    libc = _libc()
    private = libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
    return private and libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                                  None) == 0  # fmt: skip


def _confine(config: dict) -> tuple[int, bool, bool]:
    """Namespaces of its own (network with no interface up, process ids with their own /proc,
    mounts) and the sandbox user, as far as the kernel allows: ``(uid, network cut, own
    processes)``. As root the namespaces need no user namespace and are made before the drop;
    otherwise (or where a container denies it) they come with one, after the drop."""
    isolate, uid = config["isolate"], config.get("uid")
    net = own = False
    if isolate and _unshare(SPACES):
        net, own = True, _become_pid_1()
    if uid is not None:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        except OSError:  # (e.g. a uid the container does not map: reported, not fatal)
            pass
    if isolate and not net and _unshare(CLONE_NEWUSER | SPACES):
        net, own = True, _become_pid_1()
    _die_with_parent()  # (again: a fork, and a change of user, clear it)
    return os.getuid(), net, own


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

    os.chdir("work")
    uid, net, own = _confine(config)
    report(f"ISOLATION uid={uid} net={int(net)} pid={int(own)}")
    if config["require"] and not (net and own and config.get("uid") in (None, uid)):
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
