"""How the workers of one pool wake each other, and the light lane that keeps small
files to one worker at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["QueueSignal"]


class QueueSignal:
    """Lets the workers of one pool wake each other when one has changed the queue,
    and keeps small files to one worker at a time (the light lane).

    An idle worker waits for rows leased by its peers; instead of polling, it
    sleeps until a peer finishes a batch (or hands rows back), then looks again.

    The light lane: on a batch of small files a worker hashes next to nothing;
    its time goes to Python and to the catalog, where a second worker only
    queues behind the first (the interpreter lock, SQLite's single writer), so
    two workers on small files are slower than one. The worker in the lane
    claims whatever comes next; the others claim only batches heavy enough to
    be worth hashing in parallel (``LIGHT_BATCH_BYTES``) and otherwise wait
    until the lane is free. So a pool is one worker on small files and all of
    them on big ones, and on a mix, one on the small files while the others
    hash the big ones.
    """

    def __init__(self, on_heavy_work: Callable[[], None] | None = None) -> None:
        self._on_heavy_work = on_heavy_work  # the pool's: start the workers held back
        lock = threading.RLock()
        self._changed = threading.Condition(lock)
        self._generation = 0
        self._lane: object | None = None  # the worker on small files, if any
        # Its own condition: the workers waiting for the lane sleep through every
        # batch their peer finishes, and wake only when the lane is freed (or on stop).
        self._lane_freed = threading.Condition(lock)

    def enter_lane(self, worker: object) -> bool:
        """Take the light lane for ``worker`` if it is free (or already its own)."""
        with self._changed:
            if self._lane is None:
                self._lane = worker
            return self._lane is worker

    def heavy_work(self) -> None:
        """A worker claimed a batch worth hashing in parallel (see ``_Reserve``)."""
        if self._on_heavy_work is not None:
            self._on_heavy_work()

    def leave_lane(self, worker: object) -> None:
        """Free the lane if ``worker`` holds it, and wake the workers waiting for it."""
        with self._changed:
            if self._lane is not worker:
                return
            self._lane = None
            self._lane_freed.notify_all()

    def wait_for_lane(self, timeout: float, stopping: Callable[[], bool]) -> bool:
        """Wait until the lane is free or ``stopping()``; False on timeout."""
        with self._changed:
            return self._lane_freed.wait_for(lambda: self._lane is None or stopping(), timeout)

    def wake_all(self) -> None:
        """Wake every waiting worker, for the lane or for the queue (to notice a stop)."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
            self._lane_freed.notify_all()

    @property
    def generation(self) -> int:
        return self._generation

    def notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait(self, generation: int, timeout: float) -> bool:
        """Wait until the queue changed since ``generation``; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._generation != generation, timeout)
