"""A deadline on every wait for a database server's answer, and a way to cut one short.

A statement timeout is the server's own limit: a server that is frozen (its
process stopped, its machine swapped to death, a NAS gone to sleep) or cut off
by the network never sends that error, and a client would wait on its socket
for good. TCP keepalives and the TCP user timeout end a connection whose peer
*computer* is gone, but not one whose computer still acknowledges every packet
for a frozen server process. So the client keeps a deadline of its own on each
wait: a watchdog thread shuts down the socket of a wait that outlives it, which
wakes the waiting thread with an error on every system (closing the descriptor
under it would not be safe), and the wait then says why it ended.

A server that missed a deadline is *silent*: each later wait on it, and each
connection attempt, gets ``RETRY_SECONDS`` until it answers again, so that
handing rows back and reading the last counts cost seconds each, not another
full deadline. ``interrupt`` ends the waits of one thread early (Ctrl-C).

Nothing here knows the driver: ``modelvault.db.postgres`` arms a deadline for
each wait of a psycopg connection (``watch``) and turns an ended wait into the
error it stands for.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# How much longer than its own statement timeout the client gives a server to
# answer: enough for the server's cancel to arrive, so a live but slow server
# ends a statement with its own error rather than a cut connection.
ANSWER_MARGIN_SECONDS = 5.0
# A silent server's deadline per wait and per connection attempt (libpq's and
# psycopg's shortest connect timeout is 2 s).
RETRY_SECONDS = 2

DEADLINE = "deadline"
INTERRUPT = "interrupt"


class Server:
    """A database server as its client sees it: how long it may take to answer,
    and whether it went silent (missed a deadline and has not answered since)."""

    def __init__(self, name: str, answer_seconds: float) -> None:
        self.name = name  # for messages: the catalog URL, password masked
        self.answer_seconds = answer_seconds
        self.silent = False

    def bound(self) -> float:
        """The deadline of a wait starting now, in seconds from now."""
        return RETRY_SECONDS if self.silent else self.answer_seconds


class Wait:
    """One wait in flight: ``ended_by`` is None, ``DEADLINE`` or ``INTERRUPT``."""

    __slots__ = ("deadline", "ended_by", "fileno", "seconds", "server", "thread")

    def __init__(self, server: Server, fileno: int, seconds: float) -> None:
        self.server = server
        self.fileno = fileno
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.thread = threading.get_ident()
        self.ended_by: str | None = None


class NoAnswer(Exception):
    """Mixed into a driver error: the server did not answer within ``seconds``."""

    seconds: float = 0.0


# Reentrant: the Ctrl-C handler runs in the main thread, maybe while it holds it.
_lock = threading.RLock()
_wakeup = threading.Condition(_lock)
_waits: dict[int, Wait] = {}
_keys = itertools.count()
_watchdog: threading.Thread | None = None
_next_look = float("inf")  # when the watchdog looks again, unless woken


@contextmanager
def watch(server: Server, fileno: int) -> Iterator[Wait]:
    """Arm a deadline for one wait on the socket ``fileno``; a wait that ends
    normally (no exception, not cut short) clears the server's silence."""
    wait = Wait(server, fileno, server.bound())
    key = next(_keys)
    with _lock:
        _waits[key] = wait
        _start_watchdog()
        if wait.deadline < _next_look:  # rare: deadlines mostly come in order
            _wakeup.notify()
    try:
        yield wait
    finally:
        with _lock:  # from here on, the watchdog never touches this socket
            del _waits[key]
    if wait.ended_by is None:
        server.silent = False


def interrupt(thread: int) -> bool:
    """Cut short every wait of ``thread`` (a ``threading.get_ident()``); whether
    there was one. The wait ends with an error its caller turns into
    ``KeyboardInterrupt``."""
    with _lock:
        found = [w for w in list(_waits.values()) if w.thread == thread and not w.ended_by]
        for wait in found:
            _end(wait, INTERRUPT)
    return bool(found)


def awaited_servers() -> list[str]:
    """The names of the servers some thread waits for right now."""
    with _lock:
        names = {w.server.name for w in _waits.values()}
    return sorted(names)


def _start_watchdog() -> None:
    global _watchdog
    if _watchdog is None or not _watchdog.is_alive():
        _watchdog = threading.Thread(target=_run, name="modelvault-deadlines", daemon=True)
        _watchdog.start()


def _run() -> None:
    global _next_look
    with _lock:
        while True:
            now = time.monotonic()
            for wait in list(_waits.values()):
                if wait.ended_by is None and wait.deadline <= now:
                    _expire(wait)
            pending = [w.deadline for w in _waits.values() if w.ended_by is None]
            _next_look = min(pending, default=float("inf"))
            _wakeup.wait(None if not pending else max(_next_look - now, 0.0))


def _expire(wait: Wait) -> None:
    """The server missed a deadline: it is silent, and every wait on it is over."""
    wait.server.silent = True
    for other in list(_waits.values()):
        if other.server is wait.server and other.ended_by is None:
            _end(other, DEADLINE)


def _end(wait: Wait, why: str) -> None:
    """Under the lock, while the wait is registered: its socket is still its own."""
    wait.ended_by = why
    try:
        sock = socket.socket(fileno=socket.dup(wait.fileno))
    except OSError:  # already closed: the wait ends by itself
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes the waiting thread: the socket reads as ended
    except OSError:
        pass
    finally:
        sock.close()  # the duplicate only
