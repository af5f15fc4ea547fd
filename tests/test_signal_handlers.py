"""How the command sets up its signals, in this process: handlers only while it
runs, the first stopping signal raising as Ctrl-C does, a closed Windows console
interrupting and waiting for the clean-up (its logic, run here with SIGTERM)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest
from support import wait_for

from modelvault import winapi
from modelvault.cli import main
from modelvault.cli.signals import Interrupted, SignalStop, exit_code

pytestmark = pytest.mark.posix_only("raises SIGTERM and SIGHUP, which Windows has not")


def _wait_for_the_interrupt() -> None:
    """Idle in the main thread, as the command does, until a signal interrupts it."""
    wait_for(lambda: False, "the interrupt", timeout=30)


def _start_and_idle(thread: threading.Thread) -> None:
    thread.start()  # the interrupt may land as early as in start()
    _wait_for_the_interrupt()


@pytest.fixture
def default_handlers() -> Iterator[None]:
    """SIGTERM and SIGHUP as a process starts with them, put back after the test."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for signum in before:
        signal.signal(signum, signal.SIG_DFL)
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("default_handlers")
def test_the_handlers_are_there_only_while_the_command_runs() -> None:
    with SignalStop():
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) != signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    assert main(["info", "--json"]) == 0  # the command itself leaves them as it found them
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.usefixtures("default_handlers")
@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_the_first_stopping_signal_raises_as_ctrl_c_and_the_next_ones_let_it_finish(
    name: str, code: int
) -> None:
    signum = signal.Signals[name]  # by name: Windows has no SIGHUP, and collects this too
    with SignalStop() as stop:
        with pytest.raises(KeyboardInterrupt) as raised:
            signal.raise_signal(signum)
        assert isinstance(raised.value, Interrupted)
        assert exit_code(raised.value) == code
        assert (stop.received, stop.exit_code) == (signum, code)
        # While the rows are handed back, another one (a shell passing on a
        # hang-up) does not cut that short.
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGHUP)
        assert stop.received == signum


def test_exit_codes() -> None:
    assert exit_code(KeyboardInterrupt()) == 130  # Ctrl-C
    assert exit_code(Interrupted(signal.SIGTERM)) == 143
    assert exit_code(Interrupted(signal.SIGHUP)) == 129
    assert exit_code(Interrupted(21)) == 130  # SIGBREAK, Windows' Ctrl-Break
    assert str(Interrupted(signal.SIGTERM)) == "stopped by SIGTERM"


@pytest.mark.usefixtures("default_handlers")
def test_an_ignored_or_an_apps_own_handler_is_left_alone() -> None:
    def apps_own(_signum: int, _frame: object) -> None:
        seen.append(_signum)

    seen: list[int] = []
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    signal.signal(signal.SIGTERM, apps_own)
    with SignalStop() as stop:
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        signal.raise_signal(signal.SIGHUP)  # ignored: nothing raised
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        assert stop.received is None
        assert not stop.console_event(winapi.CTRL_CLOSE_EVENT)  # nothing of ours to stop
    assert signal.getsignal(signal.SIGTERM) is apps_own


@pytest.mark.usefixtures("default_handlers")
def test_outside_the_main_thread_nothing_is_installed() -> None:
    errors: list[BaseException] = []

    def command() -> None:
        try:
            with SignalStop() as stop:
                assert stop.exit_code is None
        except BaseException as exc:  # signal.signal would raise ValueError here
            errors.append(exc)

    thread = threading.Thread(target=command)
    thread.start()
    thread.join(30)
    assert errors == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.usefixtures("default_handlers")
def test_a_closed_console_interrupts_and_waits_for_the_clean_up() -> None:
    """Windows calls the handler in a thread of its own and ends the process when it
    returns: it must return only once the command has cleaned up."""
    returned: list[bool] = []
    closing = threading.Thread(target=lambda: None)
    with SignalStop(close_grace=120) as stop:
        assert not stop.console_event(winapi.CTRL_C_EVENT)  # Python's own handlers do these
        assert not stop.console_event(winapi.CTRL_BREAK_EVENT)
        closing = threading.Thread(
            target=lambda: returned.append(stop.console_event(winapi.CTRL_CLOSE_EVENT))
        )
        with pytest.raises(Interrupted):
            _start_and_idle(closing)
        assert stop.received == signal.SIGTERM  # the first stopping signal of this system
        assert closing.is_alive()  # still cleaning up: the process must not end yet
    wait_for(lambda: not closing.is_alive(), "the console handler to return")
    assert returned == [True]


@pytest.mark.usefixtures("default_handlers")
def test_a_console_closed_while_stopping_already_does_not_interrupt_again() -> None:
    with SignalStop(close_grace=0.01) as stop:
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGHUP)
        assert stop.console_event(winapi.CTRL_CLOSE_EVENT)  # waits (briefly here), raises nothing
        assert stop.received == signal.SIGHUP


def test_no_console_handler_is_added_where_there_is_no_windows() -> None:
    assert winapi.add_console_handler(lambda _event: True) is None
