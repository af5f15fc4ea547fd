"""Items computed one ahead by a helper thread: the importer's next batch is read
and converted while this one is written."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

_DONE = object()


class ReadAhead:
    """The items of ``items``, each computed by a helper thread before the consumer
    asks for it, never more than one ahead (memory holds two batches at most).

    The consumer says when the helper may compute the next item
    (``allow_next``): on PostgreSQL as soon as it takes one, since the server
    works while Python prepares; on SQLite only when the batch's ``COMMIT``
    starts, the longest call that leaves the interpreter lock free. Alongside
    the look-ups and ``settle_file``, whose statements take the lock back for
    every row, the consumer would wait for the helper up to the interpreter's
    switch interval at every row; alongside the multi-row inserts too, it
    measured more CPU and memory and saved no time.

    Taking an item allows it if the consumer did not, so nothing waits forever.
    An error in the helper is raised where its item would have come; ``close``
    stops the helper, which finishes the item it is computing and closes
    ``items`` in its own thread.
    """

    def __init__(self, items: Iterator[Any]) -> None:
        self._items = items
        self._ready: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
        self._may_compute = threading.Semaphore(0)
        self._allowed = False  # the consumer's own: whether the next item was allowed
        self._finished = False
        self._stop = threading.Event()
        self._helper = threading.Thread(
            target=self._produce, name="modelvault-import-reader", daemon=True
        )
        self._helper.start()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        self.allow_next()
        item, error = self._ready.get()
        self._allowed = False
        if error is not None or item is _DONE:
            self._finished = True
            if error is not None:
                raise error
            raise StopIteration
        return item

    def allow_next(self) -> None:
        """Let the helper compute the next item now (once per item; more calls do nothing)."""
        if not self._allowed:
            self._allowed = True
            self._may_compute.release()

    def close(self) -> None:
        self._stop.set()
        self._may_compute.release()  # wakes a helper waiting to be allowed
        self._helper.join()

    def _produce(self) -> None:
        try:
            while True:
                self._may_compute.acquire()
                if self._stop.is_set():
                    return
                item = next(self._items, _DONE)
                self._ready.put((item, None))
                if item is _DONE:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._ready.put((_DONE, exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()  # a generator's open reads end here, in the thread that runs it


__all__ = ["ReadAhead"]
