"""Signals that end a command the way Ctrl-C does.

SIGTERM (a service manager, ``docker stop``, ``kill``) and SIGHUP (the terminal
went away) on POSIX, Ctrl-Break and closing the console window on Windows,
raise ``Interrupted``, a ``KeyboardInterrupt``, in the main thread (or, while it
waits for the catalog's server, cut that wait short: it raises
``KeyboardInterrupt`` itself, see ``modelvault.cli.interrupt``): every path
that hands rows back and removes temporary copies on Ctrl-C does it for them
too, and the command ends with the same one-line message. Exit codes: 128 +
the signal's number (143 for SIGTERM, 129 for SIGHUP), 130 for Ctrl-C and
Ctrl-Break (``exit_code``).

Only the first of these signals interrupts: the next ones, while rows are
being handed back, are let be (a shell that hangs up sends SIGHUP to its jobs
after the terminal has sent one; a second Ctrl-C still interrupts, as it
always did). Windows ends a process a few seconds after its console window is
closed, once the handler returns: the handler interrupts the command and
returns when it has cleaned up (``CLOSE_GRACE_SECONDS`` at most).

``SignalStop`` installs the handlers for the time a command runs and puts
the previous ones back after, so an app that uses the library keeps its own;
a signal that was ignored when the command started (``nohup``) stays ignored.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from modelvault import winapi
from modelvault.db import deadline

__all__ = ["CLOSE_GRACE_SECONDS", "Interrupted", "SignalStop", "exit_code"]

EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), and Ctrl-Break as well
# Windows gives a process 5 s after its console is closed; the rest is for the exit.
CLOSE_GRACE_SECONDS = 4.5


def _stopping_signals() -> list[signal.Signals]:
    """The signals that stop a command as Ctrl-C does, on this system."""
    names = ("SIGBREAK",) if sys.platform == "win32" else ("SIGTERM", "SIGHUP")
    found = (getattr(signal, name, None) for name in names)
    return [signal.Signals(signum) for signum in found if signum is not None]


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by signal ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {_name(signum)}")
        self.signum = signum


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(interrupt: BaseException) -> int:
    """The exit code for a command ended by ``interrupt`` (a ``KeyboardInterrupt``)."""
    return _exit_code_of(getattr(interrupt, "signum", None))


def _exit_code_of(signum: int | None) -> int:
    """128 + the number for SIGTERM and SIGHUP, as a shell reports them; 130 for the
    rest (Ctrl-C, and Ctrl-Break, which is Windows' second way to type it)."""
    terminating = [getattr(signal, name, None) for name in ("SIGTERM", "SIGHUP")]
    if signum is not None and signum in terminating:
        return 128 + signum
    return EXIT_INTERRUPTED


Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SignalStop:
    """The handlers of the stopping signals, for the time a command runs
    (``with SignalStop() as stop:``); ``received`` is the first signal that came."""

    def __init__(self, *, close_grace: float = CLOSE_GRACE_SECONDS) -> None:
        self.received: int | None = None
        self._close_grace = close_grace
        self._previous: dict[signal.Signals, Handler] = {}
        self._close_signal: signal.Signals | None = None  # what a closed console acts as
        self._cleaned_up = threading.Event()
        self._remove_console_handler: Callable[[], None] | None = None

    @property
    def exit_code(self) -> int | None:
        """The exit code the first signal asks for; None if none came."""
        return None if self.received is None else _exit_code_of(self.received)

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set there: a library call, left alone
        for signum in _stopping_signals():
            if signal.getsignal(signum) == signal.SIG_DFL:  # not one ignored (nohup)
                self._previous[signum] = signal.signal(signum, self._interrupt)
        if self._previous:
            self._close_signal = next(iter(self._previous))
            self._remove_console_handler = winapi.add_console_handler(self.console_event)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        self._close_signal = None
        if self._remove_console_handler is not None:
            self._remove_console_handler()
            self._remove_console_handler = None
        self._cleaned_up.set()  # a console being closed may end the process now

    def _interrupt(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            return  # the stop is under way: let it hand the rows back
        self.received = signum
        if deadline.interrupt(threading.get_ident()):
            return  # the main thread's wait for the server ends, raising KeyboardInterrupt
        raise Interrupted(signum)

    def console_event(self, event: int) -> bool:
        """Windows calls this, in a thread of its own, on console events. A console
        being closed interrupts the command as its first stopping signal would
        (Ctrl-Break), then waits until the command has cleaned up, at most the
        grace time: Windows ends the process when this returns. Every other event
        is left to the handlers added before (Python's: Ctrl-C and Ctrl-Break)."""
        close_signal = self._close_signal
        if event != winapi.CTRL_CLOSE_EVENT or close_signal is None:
            return False
        if self.received is None:
            _thread.interrupt_main(close_signal)  # runs _interrupt in the main thread
        self._cleaned_up.wait(self._close_grace)
        return True
