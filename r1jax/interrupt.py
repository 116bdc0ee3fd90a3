"""Ctrl-C or a termination request in a training loop: finish the current step, save, exit.

Inside ``with GracefulStop(what) as stop:`` the first SIGINT (Ctrl-C) or SIGTERM (what a
scheduler sends before it kills a job: SLURM's ``scancel`` and time limit, Kubernetes'
eviction, a spot/preemptible VM's shutdown) prints ``what`` and sets ``stop.requested``; the
loop checks it between steps, saves and leaves. A second signal raises ``KeyboardInterrupt``
at once (abort without saving). With several JAX processes, :meth:`GracefulStop.anywhere` is
true on every process once any of them got a signal, so all stop after the same step, and
:attr:`GracefulStop.preempted` is true on all when any got SIGTERM.

After saving, a loop stopped by SIGTERM raises :class:`Preempted` (``r1jax`` then exits with
143, 128 + SIGTERM, so that the scheduler sees an unfinished job and can requeue it: the same
command resumes). Outside the main thread (where Python delivers signals) no handler is
installed and ``requested`` stays False.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import numpy as np

from r1jax import distributed as dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals a :class:`GracefulStop` turns into a save-and-stop."""

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM
"""What ``r1jax`` exits with after saving on SIGTERM."""


class Preempted(KeyboardInterrupt):
    """A loop stopped by SIGTERM after saving its checkpoint (the message says where)."""


class GracefulStop:
    """The SIGINT / SIGTERM handler of a loop that saves before it exits (see the module
    docstring). ``what``: printed on the first signal, after its name (``"SIGTERM: finishing
    this step, saving a checkpoint, then exiting"``)."""

    def __init__(self, what: str):
        self.what = what
        self.signum = 0  # the first signal this process got (0: none)
        self.seen = 0  # the signal that stopped the loop, from any process (see anywhere)
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether this process got a signal."""
        return self.signum != 0

    @property
    def preempted(self) -> bool:
        """Whether the stop :meth:`anywhere` saw is a SIGTERM (on any process)."""
        return self.seen == signal.SIGTERM

    def _on_signal(self, signum: int, *_: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{signal.Signals(signum).name}: {self.what} ({again} again to abort without "
              "saving)", flush=True)  # fmt: skip

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            # None: a handler not installed from Python (the default stands in for it)
            signal.signal(s, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def anywhere(self, num_processes: int = 1) -> bool:
        """``requested`` on any of the run's ``num_processes`` processes (a collective when
        there are several: every process must call it at the same point). Sets
        :attr:`preempted` when one of them got SIGTERM."""
        if num_processes == 1:
            self.seen = self.signum
        else:  # SIGTERM (15) outranks SIGINT (2): a preemption anywhere preempts the run
            self.seen = int(np.max(dist.allgather(np.array([self.signum], np.int32))))
        return self.seen != 0
