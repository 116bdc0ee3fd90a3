"""Ctrl-C in a training loop: finish the current step, save, then exit.

Inside ``with GracefulStop(message) as stop:`` the first SIGINT prints ``message`` and sets
``stop.requested``; the loop checks it between steps, saves and leaves. A second SIGINT raises
``KeyboardInterrupt`` at once (abort without saving). With several JAX processes,
:meth:`GracefulStop.anywhere` is true on every process once any of them was interrupted, so
all stop after the same step. Outside the main thread (where Python delivers signals) no
handler is installed and ``requested`` stays False.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from r1jax import distributed as dist


class GracefulStop:
    """The SIGINT handler of a loop that saves before it exits (see the module docstring)."""

    def __init__(self, message: str):
        self.message = message
        self.requested = False
        self._previous: Any = None

    def _on_sigint(self, *_: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{self.message}")

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def anywhere(self, num_processes: int = 1) -> bool:
        """``requested`` on any of the run's ``num_processes`` processes (a collective when
        there are several: every process must call it at the same point)."""
        if num_processes == 1:
            return self.requested
        return dist.any_true(self.requested)
