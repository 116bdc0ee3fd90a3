"""Ctrl-C and SIGTERM in a training loop (r1jax.interrupt): a first signal asks for a stop, a
second aborts, the handlers before are restored."""

from __future__ import annotations

import os
import signal

import pytest

from r1jax.interrupt import PREEMPTED_EXIT_CODE, GracefulStop, Preempted


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_first_signal_asks_for_a_stop_and_a_second_aborts(first, capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with GracefulStop("finishing this step") as stop:
        assert not stop.requested and not stop.anywhere() and not stop.preempted
        os.kill(os.getpid(), first)
        assert stop.requested and stop.anywhere()
        assert stop.preempted == (first == signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):  # either signal, the second time: abort
            os.kill(os.getpid(), signal.SIGTERM if first == signal.SIGINT else signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before
    again = "Ctrl-C" if first == signal.SIGINT else "SIGTERM"
    name = signal.Signals(first).name
    assert capsys.readouterr().out == (
        f"\n{name}: finishing this step ({again} again to abort without saving)\n"
    )


def test_preempted_is_an_interrupt_that_exits_with_128_plus_sigterm():
    assert issubclass(Preempted, KeyboardInterrupt) and PREEMPTED_EXIT_CODE == 143
