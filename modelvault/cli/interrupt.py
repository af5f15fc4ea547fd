"""Ctrl-C on the command line: the first one ends any command within 2 s.

Python turns SIGINT into ``KeyboardInterrupt`` where the main thread next runs
Python code. Two things can put that off for long:

- a wait for the PostgreSQL server's answer: psycopg then asks the server to
  cancel the statement and waits for that, which a frozen server never gives.
  So the handler here cuts the main thread's wait short instead
  (``modelvault.db.deadline.interrupt``); the wait then raises
  ``KeyboardInterrupt`` itself, at once;
- a call that does not come back to Python: SQLite waiting for another
  program's lock (its busy timeout), a file on a share that does not answer.
  So a watcher thread hears of the signal at once (through the wakeup
  descriptor, written by the C-level handler whatever the main thread does)
  and, if the command is still running ``GRACE_SECONDS`` later, ends the
  process itself, saying what may be left behind.

A command that must wait for the catalog after Ctrl-C (workers handing rows
back) waits ``HAND_BACK_SECONDS`` at most (``modelvault.cli.workers``).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType

from modelvault.cli.escaping import printable
from modelvault.db import deadline

GRACE_SECONDS = 1.75  # after the first Ctrl-C, the process ends by itself
HAND_BACK_SECONDS = 1.4  # how long workers get to hand their rows back after Ctrl-C
_STOP = b"\0"  # no signal has number 0: the watcher's own "you may go"


class Unfinished(KeyboardInterrupt):
    """An interrupt whose clean-up could not finish in time: its ``str`` says what
    was left undone and what to do."""


@contextmanager
def first_ctrl_c_ends() -> Iterator[None]:
    """While it lasts, the first Ctrl-C ends the command within ``GRACE_SECONDS``
    (only in the main thread, where Python delivers signals, and unless SIGINT
    was ignored when the command started, as in a job a script put in the
    background; elsewhere it does nothing)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    ):
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    watcher = _Watcher(reader)
    previous_handler = signal.signal(signal.SIGINT, _on_interrupt)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous_handler)
        watcher.done.set()
        with suppress(OSError):
            writer.send(_STOP)
        watcher.join()
        reader.close()
        writer.close()


def _on_interrupt(_signum: int, _frame: FrameType | None) -> None:
    if deadline.interrupt(threading.get_ident()):
        return  # the main thread's wait for the server ends, raising KeyboardInterrupt
    raise KeyboardInterrupt


class _Watcher(threading.Thread):
    """Hears of each signal as it arrives; after a SIGINT, ends the process if it
    is still running ``GRACE_SECONDS`` later."""

    def __init__(self, reader: socket.socket) -> None:
        super().__init__(name="modelvault-ctrl-c", daemon=True)
        self.reader = reader
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                received = self.reader.recv(64)
            except OSError:
                return
            if not received or _STOP in received:
                return
            if signal.SIGINT in received:
                if not self.done.wait(GRACE_SECONDS):
                    _end_now()
                return


def _end_now() -> None:
    """The command did not end in time: say what it may leave behind, and end."""
    from modelvault.cli.common import EXIT_INTERRUPTED

    servers = deadline.awaited_servers()
    if servers:
        why = f"the catalog server at {printable(', '.join(servers))} does not answer"
    else:
        why = f"a step did not end within {GRACE_SECONDS:g} s (a database lock, a file that hangs?)"
    message = (
        f"modelvault: interrupted: {why}, so it stopped without finishing that step: files "
        "being hashed may be left claimed (the next run on this host takes them over at "
        "once, other hosts after their lease runs out); run the same command again to "
        "continue\n"
    )
    with suppress(OSError):
        os.write(2, message.encode("utf-8", "replace"))
    os._exit(EXIT_INTERRUPTED)
