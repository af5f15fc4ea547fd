"""Statuses on their way to an app's callbacks: each subscriber has a thread of its own.

``post`` never waits and never calls a callback, so no caller's thread (an
app's, a worker's, the manager's) is ever stalled by one. Each subscriber has
its own small mailbox and its own delivery thread, so one that is slow, or
never returns, delays nothing but itself: the others keep getting every status
on time. A status replaces a queued one of the same kind (progress coalesces: a
slow subscriber gets the latest, not a backlog); changes of kind (a migration's
states) queue up to ``MAILBOX_SIZE``, the oldest dropped beyond.

A delivery thread is a daemon that starts when its subscriber has something to
receive and ends when it has nothing left, so no thread outlives its work;
unsubscribing ends it after the call in progress, and ``close()`` delivers what
is queued, then ends them all (one whose callback never returns is abandoned,
with a warning: a daemon does not keep the process alive).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from modelvault.errors import MigrationError

log = logging.getLogger(__name__)

MAILBOX_SIZE = 16  # changes of kind queued for a slow subscriber; the rest coalesces
SLOW_CALLBACK_SECONDS = 10.0  # a callback busy this long is named in a warning (once a call)
CLOSE_WAIT_SECONDS = 2.0  # how long close() waits for the deliveries in progress to end

S = TypeVar("S")

_numbers = itertools.count(1)


class Subscribers(Generic[S]):
    """The subscribers of one publisher; ``kind(status)`` says which statuses coalesce."""

    def __init__(self, kind: Callable[[S], object]) -> None:
        self._kind = kind
        self._lock = threading.Lock()
        self._deliveries: list[_Delivery[S]] = []
        self._sequence = 0  # statuses posted so far

    def subscribe(self, callback: Callable[[S], None]) -> Callable[[], None]:
        """Add ``callback``; returns the function that removes it.

        After that function returns, ``callback`` is not called again (a call in
        progress finishes; its thread then ends). It never waits, and may be
        called from the callback itself.
        """
        with self._lock:
            delivery = _Delivery(callback, self._kind, delivered=self._sequence)
            self._deliveries.append(delivery)

        def unsubscribe() -> None:
            with self._lock:
                if delivery in self._deliveries:
                    self._deliveries.remove(delivery)
            delivery.close(drain=False)

        return unsubscribe

    def post(self, status: S) -> None:
        """Hand ``status`` to every subscriber's mailbox; never waits for a callback."""
        with self._lock:  # one order of statuses for every subscriber
            self._sequence += 1
            for delivery in self._deliveries:
                delivery.post(self._sequence, status)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every subscriber was given a status as new as the newest posted so
        far (or was removed); False on timeout.

        Raises ``MigrationError`` when called from a callback: it would wait for
        that very callback (or for one that waits for it) and never return.
        """
        with self._lock:
            deliveries, target = list(self._deliveries), self._sequence
        if any(d.is_current_thread() for d in deliveries):
            raise MigrationError(
                "flush() was called from a progress subscriber's callback, where it would wait "
                "for that callback itself: call it from another thread, or not at all "
                "(a callback is always given the newest status)."
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        return all(d.wait_delivered(target, _left(deadline)) for d in deliveries)

    def close(self, timeout: float = CLOSE_WAIT_SECONDS) -> bool:
        """Deliver what is queued, then end every delivery thread and remove every
        subscriber. Waits up to ``timeout`` in all; a thread whose callback has not
        returned by then is abandoned with a warning (it ends when the callback
        returns, and calls nothing more). False if one was."""
        with self._lock:
            deliveries, self._deliveries = self._deliveries, []
        for delivery in deliveries:
            delivery.close(drain=True)
        deadline = time.monotonic() + timeout
        ended = True
        for delivery in deliveries:
            if delivery.is_current_thread() or delivery.wait_ended(_left(deadline)):
                continue
            ended = False
            delivery.close(drain=False)  # when it returns, it is not called again
            log.warning(
                "progress subscriber %r has not returned for %.1f s: its delivery thread is "
                "left to end when it does (a daemon thread: it keeps nothing from exiting)",
                delivery.callback,
                delivery.busy_seconds(),
            )
        return ended


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _Delivery(Generic[S]):
    """One subscriber: its mailbox, and the thread that calls it back."""

    def __init__(
        self, callback: Callable[[S], None], kind: Callable[[S], object], *, delivered: int
    ):
        self.callback = callback
        self._kind = kind
        self._name = f"modelvault-subscriber-{next(_numbers)}"
        self._changed = threading.Condition()
        self._queue: deque[tuple[int, S]] = deque()  # (sequence number, status)
        self._delivered = delivered  # the newest sequence number handed over (or skipped)
        self._thread: threading.Thread | None = None  # while one delivers
        self._busy_since: float | None = None  # while the callback runs
        self._warned = False
        self._closing = False  # no more statuses taken
        self._closed = False  # nothing more delivered, not even what is queued

    def post(self, sequence: int, status: S) -> None:
        with self._changed:
            if self._closing:
                return
            if self._queue and self._kind(self._queue[-1][1]) == self._kind(status):
                self._queue[-1] = (sequence, status)
            else:
                self._queue.append((sequence, status))
                while len(self._queue) > MAILBOX_SIZE:
                    self._queue.popleft()
            self._warn_if_stuck()
            if self._thread is None:
                self._start()

    def _start(self) -> None:
        """Under the lock: a thread to deliver what is queued."""
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: the next status tries again
            log.warning("cannot start a thread for progress subscriber %r: %s", self.callback, exc)
            return
        self._thread = thread

    def close(self, *, drain: bool) -> None:
        """Take no more statuses; with ``drain``, deliver those queued first."""
        with self._changed:
            self._closing = True
            if not drain:
                self._closed = True
                self._queue.clear()
            self._changed.notify_all()

    def is_current_thread(self) -> bool:
        return self._thread is not None and self._thread is threading.current_thread()

    def wait_delivered(self, sequence: int, timeout: float | None) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: self._closed or self._delivered >= sequence, timeout
            )

    def wait_ended(self, timeout: float | None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._thread is None, timeout)

    def busy_seconds(self) -> float:
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._closed or not self._queue:
                    self._thread = None
                    self._changed.notify_all()
                    return
                sequence, status = self._queue.popleft()
                self._busy_since, self._warned = time.monotonic(), False
            self._call(status)
            with self._changed:
                self._busy_since = None
                self._delivered = max(self._delivered, sequence)
                self._changed.notify_all()

    def _call(self, status: S) -> None:
        try:
            self.callback(status)
        except BaseException:  # SystemExit, KeyboardInterrupt...: an app's callback ends nothing
            log.exception(
                "progress subscriber %r failed; it still gets the statuses", self.callback
            )

    def _warn_if_stuck(self) -> None:
        """Under the lock: name a callback that has been busy for long, once per call."""
        if self._warned or self.busy_seconds() < SLOW_CALLBACK_SECONDS:
            return
        self._warned = True
        log.warning(
            "progress subscriber %r has not returned for %.0f s; the run and the other "
            "subscribers go on, and it gets the newest status when it returns",
            self.callback,
            self.busy_seconds(),
        )
