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
each wait of a psycopg connection (``Wait``) and turns a wait cut short into the
error it stands for.
"""

from __future__ import annotations

import os
import socket
import threading
import time

# How much longer than its own statement timeout the client gives a server to
# answer: enough for the server's cancel to arrive, so a live but slow server
# ends a statement with its own error rather than a cut connection.
ANSWER_MARGIN_SECONDS = 5.0
# A silent server's deadline per wait and per connection attempt (libpq's and
# psycopg's shortest connect timeout is 2 s).
RETRY_SECONDS = 2

# How often the watchdog looks while no wait is in flight (a wait's deadline is
# seconds away: RETRY_SECONDS at the least in use).
IDLE_LOOK_SECONDS = 1.0

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
    """One wait for ``server``'s answer on the socket ``fileno``, with a deadline
    while it lasts (``with Wait(...) as wait:``). ``ended_by`` is None, or why it
    was cut short: ``DEADLINE`` or ``INTERRUPT``. A wait that ends normally (no
    exception, not cut short) clears the server's silence."""

    __slots__ = ("deadline", "ended_by", "fileno", "seconds", "server", "thread")

    def __init__(self, server: Server, fileno: int) -> None:
        self.server = server
        self.fileno = fileno
        self.seconds = server.bound()
        self.deadline = time.monotonic() + self.seconds
        self.thread = threading.get_ident()
        self.ended_by: str | None = None

    def __enter__(self) -> Wait:
        with _lock:
            _waits.add(self)
            _start_watchdog()
            if self.deadline < _next_look:  # rare: the watchdog looks sooner than that
                _wakeup.notify()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        with _lock:  # from here on, the watchdog never touches this socket
            _waits.discard(self)
        if exc_type is None and self.ended_by is None:
            self.server.silent = False


class NoAnswer(Exception):
    """Mixed into a driver error: the server did not answer within ``seconds``."""

    seconds: float = 0.0


# Reentrant: the Ctrl-C handler runs in the main thread, maybe while it holds it.
_lock = threading.RLock()
_wakeup = threading.Condition(_lock)
_waits: set[Wait] = set()
_watchdog: threading.Thread | None = None
_next_look = float("inf")  # when the watchdog looks again, unless woken


def _forget_after_fork() -> None:
    """A child process starts with no waits, no watchdog, and a lock nobody holds."""
    global _lock, _wakeup, _waits, _watchdog, _next_look
    _lock = threading.RLock()
    _wakeup = threading.Condition(_lock)
    _waits, _watchdog, _next_look = set(), None, float("inf")


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_after_fork)


def interrupt(thread: int) -> bool:
    """Cut short every wait of ``thread`` (a ``threading.get_ident()``); whether
    there was one. The wait ends with an error its caller turns into
    ``KeyboardInterrupt``."""
    with _lock:
        found = [w for w in list(_waits) if w.thread == thread and not w.ended_by]
        for wait in found:
            _end(wait, INTERRUPT)
    return bool(found)


def awaited_servers() -> list[str]:
    """The names of the servers some thread waits for right now."""
    with _lock:
        names = {w.server.name for w in _waits}
    return sorted(names)


def _start_watchdog() -> None:
    global _watchdog
    if _watchdog is None:  # it runs for good (in a forked child: see _forget_after_fork)
        _watchdog = threading.Thread(target=_run, name="modelvault-deadlines", daemon=True)
        _watchdog.start()


def _run() -> None:
    global _next_look
    with _lock:
        while True:
            now = time.monotonic()
            for wait in list(_waits):
                if wait.ended_by is None and wait.deadline <= now:
                    _expire(wait)
            # Between waits it looks every IDLE_LOOK_SECONDS rather than sleep until
            # woken: a new wait, whose deadline is further away, then wakes nobody.
            pending = [w.deadline for w in _waits if w.ended_by is None]
            _next_look = min(pending, default=now + IDLE_LOOK_SECONDS)
            _wakeup.wait(max(_next_look - now, 0.0))


def _expire(wait: Wait) -> None:
    """The server missed a deadline: it is silent, and every wait on it is over."""
    wait.server.silent = True
    for other in list(_waits):
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
