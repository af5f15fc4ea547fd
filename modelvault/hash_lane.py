"""A second digest beside the SHA-256, on another core: ``Lane``.

``hashing.hash_file_digest(beside=step)`` gives ``step`` (AutoV3's update, say)
every chunk the SHA-256 takes, in file order, in a thread of its own: hashlib
releases the GIL for updates of more than 2 KiB, so on two cores the two
digests run side by side instead of one after the other. The chunks are not
copied: they are the relay's own buffers, so a relay thread calls ``release``
before it reads into its buffer again, and waits there until the lane has done
with the chunk that buffer held. The lane never waits on the relay, so neither
can wait on the other in a circle.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["Lane"]

Step = Callable[[memoryview], None]


class Lane:
    """Runs ``step`` on the chunks given to it, in order, in a thread of its own.

    ``give(chunk)`` (by whichever thread holds the hash's turn) queues a chunk;
    ``release(buffer)`` waits until no chunk given from ``buffer`` is still to be
    done; ``close()`` waits for the rest (or, with ``drop``, leaves them) and
    raises what ``step`` raised, if it did.
    """

    def __init__(self, step: Step) -> None:
        self._step = step
        self._ready = threading.Condition()
        self._queue: deque[memoryview] = deque()
        self._given = 0  # chunks given so far
        self._done = 0  # chunks the step is done with (or skipped, after a failure)
        self._last_from: dict[int, int] = {}  # id of a buffer -> number of its last chunk
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelvault-hash-beside")
        self._thread.daemon = True
        self._thread.start()

    def give(self, chunk: memoryview) -> None:
        with self._ready:
            self._given += 1
            self._last_from[id(chunk.obj)] = self._given
            self._queue.append(chunk)
            self._ready.notify_all()

    def release(self, buffer: memoryview) -> None:
        """Return once the lane no longer reads ``buffer`` (before it is filled again)."""
        with self._ready:
            last = self._last_from.get(id(buffer.obj), 0)
            self._ready.wait_for(lambda: self._done >= last)

    def close(self, *, drop: bool = False) -> None:
        with self._ready:
            self._closing = True
            if drop:
                self._done += len(self._queue)
                self._queue.clear()
            self._ready.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                chunk = self._queue.popleft()
            try:
                if self._error is None:
                    self._step(chunk)  # outside the lock: this is the work done beside
            except BaseException as exc:  # handed to close(); the chunks left are skipped
                self._error = exc
            with self._ready:
                self._done += 1
                self._ready.notify_all()
