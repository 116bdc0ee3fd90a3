"""A small process pool with per-call timeouts that survives hangs and crashes.

``concurrent.futures.ProcessPoolExecutor`` breaks for good when a worker dies, and
cannot cancel a running call; this pool instead tracks which call each worker is
running, kills a worker whose call overruns its timeout (plus a grace period) or that
dies (even by ``SIGSEGV``), reports that call, requeues the worker's other calls and
starts a replacement. Workers are fresh interpreters started with fork+exec
(``python -m r1jax.rewards._worker``), so a multi-threaded JAX parent is never forked
and the parent's ``__main__`` is never re-imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

logger = logging.getLogger(__name__)

DoneFn = Callable[[str, float, str], None]
STATUSES = ("ok", "error", "timeout")  # what a worker answers for a call


@dataclasses.dataclass
class Call:
    """One reward call; ``on_done(status, value, message)`` runs on the pool's thread.

    ``status`` is ``ok``, ``error``, ``timeout`` or ``crash`` (the worker died).
    """

    ref: str
    completion: str
    row: dict[str, Any]
    kwargs: dict[str, Any]
    timeout_s: float
    on_done: DoneFn
    call_id: int = -1

    def payload(self) -> tuple[Any, ...]:
        """What the worker receives for this call."""
        return (self.call_id, self.ref, self.completion, self.row, self.kwargs, self.timeout_s)


MAX_ANSWER_BYTES = 1 << 20


def _answer(data: bytes) -> tuple:
    """A worker's JSON answer (:func:`r1jax.rewards._worker.send`): ``("ready", pid)``,
    ``("fatal", message)`` or ``(call_id, status, value, message)``.

    Raises:
      ValueError: anything else.
    """
    message = json.loads(data)
    ok = isinstance(message, list) and message and (
        (len(message) == 2 and message[0] == "ready")
        or (len(message) == 2 and message[0] == "fatal" and isinstance(message[1], str))
        or (len(message) == 4 and isinstance(message[0], int) and message[1] in STATUSES
            and isinstance(message[2], int | float) and isinstance(message[3], str))
    )  # fmt: skip
    if not ok:
        raise ValueError(f"{data[:80]!r}")
    return tuple(message)


class _Worker:
    def __init__(self, config: dict[str, Any]) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or ".") for p in sys.path)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "r1jax.rewards._worker", str(task_r), str(result_w)]
                + [json.dumps(config)],
                pass_fds=(task_r, result_w),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(task_r)
            os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.inflight: deque[Call] = deque()
        self.calls = 0  # results received
        self.ready = False
        self.last_event = time.monotonic()

    def kill(self) -> int | None:
        """Kill the worker's process group, close its pipes, return its exit code."""
        if self.proc.poll() is None:  # unreaped: its process group id is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait()
        self.tasks.close()
        self.results.close()
        return code


class WorkerPool:
    """``num_workers`` reward workers fed from one FIFO queue by a dispatcher thread.

    Args:
      num_workers: worker processes (>= 1).
      preload: modules each worker imports at start (where the reward functions live).
      kill_grace_s: extra time after a call's timeout before its worker is killed (the
        worker's own ``SIGALRM`` normally interrupts the call at the timeout).
      chunk_size: most calls sent to a worker at once.
      memory_mb: optional ``RLIMIT_AS`` for each worker.
      startup_timeout_s: a worker not ready after this long is considered failed.
      spare_worker: keep one extra started worker that immediately replaces a killed or
        dead one, so a hang or crash does not also cost a worker start-up (~0.5-1 s).
      max_calls_per_worker: replace a worker once it has returned this many results (when
        idle; the spare takes its place), so that a reward that leaks memory or state in its
        process cannot grow it for the whole run (``None``: never).
    """

    def __init__(
        self,
        num_workers: int,
        preload: list[str],
        kill_grace_s: float = 1.0,
        chunk_size: int = 16,
        memory_mb: int | None = None,
        startup_timeout_s: float = 60.0,
        spare_worker: bool = True,
        max_calls_per_worker: int | None = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"WorkerPool needs num_workers >= 1, got {num_workers}")
        self._max_calls = max_calls_per_worker
        self._config = {"preload": list(preload), "memory_mb": memory_mb}
        self._grace = kill_grace_s
        self._chunk_size = max(1, chunk_size)
        self._startup_timeout = startup_timeout_s
        self._lock = threading.Lock()
        self._pending: deque[Call] = deque()
        self._next_id = 0
        self._closing = False
        self._failed_starts = 0
        self.broken: str | None = None
        self.restarts = 0  # workers replaced after a hang, crash or failed start
        self.recycled = 0  # workers replaced after max_calls_per_worker results
        self._wake_r, self._wake_w = os.pipe()
        self._workers = [_Worker(self._config) for _ in range(num_workers)]
        self._spare = _Worker(self._config) if spare_worker else None
        self._thread = threading.Thread(target=self._loop, name="r1jax-reward-pool", daemon=True)
        self._thread.start()

    def submit(self, calls: list[Call]) -> None:
        """Queue calls (FIFO); returns immediately."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the reward pool is closed")
            for call in calls:
                call.call_id = self._next_id
                self._next_id += 1
            self._pending.extend(calls)
            os.write(self._wake_w, b"x")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the workers; calls not yet finished complete with status ``error``."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            os.write(self._wake_w, b"x")
        self._thread.join(timeout_s)

    # ---- dispatcher thread -------------------------------------------------------------

    def _fail(self, calls: list[Call], status: str, message: str) -> None:
        for call in calls:
            call.on_done(status, 0.0, message)

    def _all(self) -> list[_Worker]:
        return self._workers + ([self._spare] if self._spare is not None else [])

    def _replace(self, worker: _Worker, status: str, message: str) -> None:
        """Kill ``worker``; its running call gets ``status``; requeue its other calls;
        promote the spare (if any) into its place and start a new spare."""
        code = worker.kill()
        if worker.inflight:
            first = worker.inflight.popleft()
            suffix = f" (exit code {code})" if status == "crash" else ""
            first.on_done(status, 0.0, message + suffix)
            with self._lock:
                self._pending.extendleft(reversed(worker.inflight))
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= 3 and self.broken is None:
                self.broken = f"reward workers failed to start 3 times: {message}"
        self.restarts += 1
        if worker is self._spare:
            self._spare = _Worker(self._config)
            return
        self._swap_in_spare(worker)

    def _swap_in_spare(self, worker: _Worker) -> None:
        """The spare (or a new worker) takes the place of the killed ``worker``."""
        i = self._workers.index(worker)
        if self._spare is not None:
            self._workers[i], self._spare = self._spare, _Worker(self._config)
        else:
            self._workers[i] = _Worker(self._config)

    def _recycle_worn(self) -> None:
        """Replaces the idle workers that have returned ``max_calls_per_worker`` results."""
        if not self._max_calls:
            return
        for worker in list(self._workers):
            if worker.ready and not worker.inflight and worker.calls >= self._max_calls:
                worker.kill()
                self._swap_in_spare(worker)
                self.recycled += 1

    def _receive(self, worker: _Worker) -> None:
        try:
            while worker.results.poll():
                message = _answer(worker.results.recv_bytes(MAX_ANSWER_BYTES))
                worker.last_event = time.monotonic()
                if message[0] == "ready":
                    worker.ready = True
                    self._failed_starts = 0
                elif message[0] == "fatal":
                    self.broken = message[1]
                elif worker.inflight and message[0] == worker.inflight[0].call_id:
                    worker.calls += 1
                    worker.inflight.popleft().on_done(*message[1:])
        except (EOFError, OSError):
            self._replace(worker, "crash", "reward worker died")
        except ValueError as e:  # not one of the worker's answers: whoever wrote it, replace
            self._replace(worker, "crash", f"reward worker sent a malformed answer ({e})")

    def _assign(self) -> None:
        self._recycle_worn()
        with self._lock:
            idle = deque(w for w in self._workers if w.ready and not w.inflight)
            while idle and self._pending:
                worker = idle.popleft()
                # Small chunks when the queue is short, so one slow call delays few others.
                share = math.ceil(len(self._pending) / (2 * len(self._workers)))
                n = max(1, min(self._chunk_size, share))
                chunk = [self._pending.popleft() for _ in range(n)]
                try:
                    payload = pickle.dumps(("run", [c.payload() for c in chunk]), protocol=5)
                except Exception:  # noqa: BLE001  (an unpicklable row or kwargs)
                    self._drop_unpicklable(chunk)
                    idle.appendleft(worker)
                    continue
                try:
                    worker.tasks.send_bytes(payload)
                except (OSError, ValueError):  # the worker died; _receive will replace it
                    self._pending.extendleft(reversed(chunk))
                    continue
                worker.inflight.extend(chunk)
                worker.last_event = time.monotonic()

    def _drop_unpicklable(self, chunk: list[Call]) -> None:
        """Fail the calls of ``chunk`` that cannot be pickled; requeue the others first."""
        good = []
        for call in chunk:
            try:
                pickle.dumps(call.payload(), protocol=5)
                good.append(call)
            except Exception as e:  # noqa: BLE001
                call.on_done("error", 0.0, f"cannot send call to worker: {e}")
        self._pending.extendleft(reversed(good))

    def _deadline(self, worker: _Worker) -> float:
        if not worker.ready:
            return worker.last_event + self._startup_timeout
        if worker.inflight:
            return worker.last_event + worker.inflight[0].timeout_s + self._grace
        return math.inf

    def _loop(self) -> None:
        try:
            while not self._closing and self.broken is None:
                self._assign()
                now = time.monotonic()
                workers = self._all()
                nearest = min(self._deadline(w) for w in workers)
                ready = wait(
                    [w.results for w in workers] + [self._wake_r],
                    timeout=None if nearest == math.inf else max(0.0, nearest - now),
                )
                if self._wake_r in ready:
                    os.read(self._wake_r, 4096)
                for worker in workers:
                    if worker.results in ready:
                        self._receive(worker)
                now = time.monotonic()
                for worker in self._all():
                    if now >= self._deadline(worker):
                        if worker.ready:
                            timeout = worker.inflight[0].timeout_s
                            self._replace(worker, "timeout", f"killed after {timeout} s + grace")
                        else:
                            self._replace(worker, "crash", "reward worker did not start in time")
        except BaseException:  # noqa: BLE001
            logger.exception("reward pool dispatcher failed")
            self.broken = "reward pool dispatcher failed (see log)"
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            self._closing = True
            pending, self._pending = list(self._pending), deque()
        self._fail(pending, "error", self.broken or "reward pool closed")
        for worker in self._all():
            with contextlib.suppress(OSError, ValueError):
                worker.tasks.send(("exit",))
        for worker in self._all():
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=1.0)
            inflight = list(worker.inflight)
            worker.inflight.clear()
            worker.kill()
            self._fail(inflight, "error", self.broken or "reward pool closed")
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
