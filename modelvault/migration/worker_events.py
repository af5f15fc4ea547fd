"""What a worker tells: ``WorkerEvent``s for its subscriber, and its ``WorkerReport``
(``Accounts`` keeps both, and what was read of the file in hand)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from modelvault.catalog.settle import Settled
from modelvault.hashing import FileDigest
from modelvault.migration.worker_files import path_problem, size_now
from modelvault.queue.rows import ClaimedRow

__all__ = ["EVENT_KINDS", "Accounts", "EventCallback", "WorkerEvent", "WorkerReport"]

log = logging.getLogger("modelvault.migration.worker")  # the worker's own log, as before

EVENT_KINDS = (
    "claimed",
    "progress",
    "paused",
    "waiting",
    "finished",
    "error",
    "released",
    "abandoned",
)

EventCallback = Callable[["WorkerEvent"], None]


@dataclass(frozen=True)
class WorkerEvent:
    """Something a worker did, sent to ``on_event`` from the worker's thread.

    ``kind`` is one of:

    - ``claimed``: the worker starts on the row; ``bytes`` = its staged size; for a row
      staged without one (``unsized`` is True), its file's size stat-ed now (0 if
      that failed);
    - ``progress``: ``bytes`` more of the file were hashed;
    - ``paused``: the worker noticed the pause and holds still (``path`` is the
      file whose hash is kept, or ``""`` between files; ``bytes`` read so far);
    - ``waiting``: the worker found nothing to claim while ``files`` rows wait out
      a retry back-off, the first of them for ``seconds`` more (sent again every
      time it looks, a few times a second at most; ``row_id`` 0, ``path`` "");
    - ``finished``: the row reached its final place; ``outcome`` is imported,
      merged, moved, replaced, duplicate, conflict, missing or failed; ``bytes`` = the
      file's size when hashed (0 if it was not); ``sha256`` when known;
    - ``error``: an attempt failed (``message``); ``outcome`` is ``retried`` when
      the row will be tried again (a ``finished`` follows otherwise);
    - ``released``: the row went back to the queue (``message`` says why: a
      stop, or a lease lost to another worker);
    - ``abandoned``: the worker ended but could not hand the row back (the
      catalog failed): it stays claimed until the next run on this host takes it
      over, or its lease runs out.

    Every row a worker claims gets exactly one ``finished``, ``released`` or
    ``abandoned`` per claim (a ``retried`` error ends that claim too). For
    ``error``, ``released`` and ``abandoned``, ``bytes`` is what was read of the
    file in this attempt and will be read again: subtract it to keep a progress
    bar honest.
    """

    kind: str
    worker: str
    row_id: int
    path: str
    bytes: int = 0
    outcome: str | None = None
    message: str | None = None
    sha256: str | None = None
    unsized: bool = False
    files: int = 0
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WorkerReport:
    """What a worker, or a pool, did. ``bytes_hashed`` counts every byte read.

    Each claim of a row is counted once: under its final outcome, ``retried``
    (back in the queue after a back-off), ``released`` (handed back untouched,
    or lost to another worker) or ``abandoned`` (left claimed: the catalog failed).
    """

    imported: int = 0
    merged: int = 0
    moved: int = 0
    replaced: int = 0
    duplicate: int = 0
    conflict: int = 0
    missing: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    abandoned: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    workers: int = 1

    @property
    def finished(self) -> int:
        """Rows that reached a final place."""
        return (
            self.imported
            + self.merged
            + self.moved
            + self.replaced
            + self.duplicate
            + self.conflict
            + self.missing
            + self.failed
        )

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @classmethod
    def combine(cls, reports: Iterable[WorkerReport], *, seconds: float) -> WorkerReport:
        parts = list(reports)
        total = cls(seconds=seconds, workers=len(parts))
        for part in parts:
            for f in fields(cls):
                if f.name not in ("seconds", "workers"):
                    setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
        return total

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finished"] = self.finished
        data["seconds"] = round(self.seconds, 3)
        return data


class Accounts:
    """A worker's report and events: each claim of a row is counted once and told once
    (see ``WorkerEvent``), with what was read of its file in the attempt that ends."""

    def __init__(self, name: str, on_event: EventCallback | None) -> None:
        self.name = name
        self.on_event = on_event
        self.report = WorkerReport()
        self.current: ClaimedRow | None = None  # the row being hashed
        self._reading_id = 0  # the row _row_bytes belongs to
        self._row_bytes = 0
        self._pause_announced = False

    def begin(self, row: ClaimedRow) -> None:
        """A new attempt at ``row``: the ``claimed`` event, with a size for the progress bar
        even if none was staged (stat-ed now, unless the path must not be touched)."""
        self._reading_id, self._row_bytes = row.id, 0
        if self.on_event is None:
            return
        if row.size_bytes is not None:
            self.emit("claimed", row, bytes=row.size_bytes)
            return
        size = size_now(row.path) if path_problem(row.path) is None else 0
        self.emit("claimed", row, bytes=size, unsized=True)

    def read(self, n: int) -> None:
        """``n`` more bytes of the current file were hashed."""
        self._row_bytes += n
        self.report.bytes_hashed += n
        self._pause_announced = False
        if self.on_event is not None and self.current is not None:
            self.emit("progress", self.current, bytes=n)

    def bytes_read(self, row: ClaimedRow) -> int:
        """What was read of ``row``'s file in its last attempt (to take back from progress)."""
        return self._row_bytes if row.id == self._reading_id else 0

    def outcome(self, row: ClaimedRow, digest: FileDigest, settled: Settled) -> None:
        """A hashed row was settled."""
        outcome = settled.outcome.value
        self.report.count(outcome)
        if self.on_event is None:  # no subscriber: no event to build
            return
        self.emit(
            "finished",
            row,
            bytes=digest.size_bytes,
            outcome=outcome,
            message=settled.reason,
            sha256=digest.sha256,
        )

    def failed_attempt(self, row: ClaimedRow, outcome: str, message: str) -> None:
        """An attempt failed: ``outcome`` is ``retried``, ``failed`` or ``missing``."""
        self.report.count(outcome)
        self.emit("error", row, bytes=self.bytes_read(row), outcome=outcome, message=message)
        if outcome != "retried":
            self.emit("finished", row, outcome=outcome, message=message)

    def released(self, row: ClaimedRow, why: str) -> None:
        self.report.released += 1
        log.info("%s: %s", row.path, why)
        self.emit("released", row, bytes=self.bytes_read(row), message=why)

    def abandoned(self, row: ClaimedRow) -> None:
        self.report.abandoned += 1
        self.emit(
            "abandoned",
            row,
            bytes=self.bytes_read(row),
            message="left claimed: the catalog failed before it could be handed back",
        )

    def waiting(self, files: int, seconds: float | None) -> None:
        if self.on_event is not None:
            self.send(WorkerEvent("waiting", self.name, 0, "", files=files, seconds=seconds))

    def announce_pause(self) -> None:
        """The ``paused`` event, once per pause."""
        if self._pause_announced:
            return
        self._pause_announced = True
        current = self.current
        if current is not None:
            self.emit("paused", current, bytes=self._row_bytes)
        elif self.on_event is not None:
            self.send(WorkerEvent("paused", self.name, 0, ""))

    def pause_over(self) -> None:
        self._pause_announced = False

    def emit(self, kind: str, row: ClaimedRow, **values: Any) -> None:
        if self.on_event is not None:
            self.send(WorkerEvent(kind, self.name, row.id, row.path, **values))

    def send(self, event: WorkerEvent) -> None:
        assert self.on_event is not None
        try:
            self.on_event(event)
        except Exception:  # a broken progress display must not lose rows
            log.exception("on_event callback failed on %s", event)
