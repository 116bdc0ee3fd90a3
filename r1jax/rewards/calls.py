"""Calling one reward function with a timeout; shared by the workers and serial mode."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from typing import Any

MAX_MESSAGE_CHARS = 500


class CallTimeout(BaseException):
    """Raised by the interval timer inside a reward call (a BaseException so that
    ``except Exception`` in reward code does not swallow it)."""


def _raise_timeout(signum: int, frame: Any) -> None:
    raise CallTimeout


def _can_use_timer() -> bool:
    return (
        threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )


def call_with_timeout(
    fn: Callable[..., Any],
    completion: str,
    row: dict[str, Any],
    kwargs: dict[str, Any],
    timeout_s: float | None,
) -> tuple[str, float, str]:
    """Call ``fn(completion, row, **kwargs)``: ``(status, value, message)``, never raises.

    ``status`` is ``ok`` (finite float value), ``error`` (exception or non-finite /
    non-numeric result; value 0) or ``timeout`` (value 0). The timeout uses
    ``SIGALRM`` and is only applied in the main thread when no interval timer is armed.
    """
    use_timer = bool(timeout_s) and _can_use_timer()
    old_handler = signal.signal(signal.SIGALRM, _raise_timeout) if use_timer else None
    try:
        try:
            if use_timer:
                signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                value = fn(completion, row, **kwargs)
            finally:
                if use_timer:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except CallTimeout:
            return "timeout", 0.0, f"timed out after {timeout_s} s"
        except BaseException as e:  # noqa: BLE001  (rewards may raise anything)
            return "error", 0.0, f"{type(e).__name__}: {e}"[:MAX_MESSAGE_CHARS]
    finally:
        if use_timer:
            signal.signal(signal.SIGALRM, old_handler)
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            return "error", 0.0, f"reward returned {type(value).__name__}, not a float"
    if not math.isfinite(value):
        return "error", 0.0, f"reward returned non-finite {value}"
    return "ok", float(value), ""
