"""Stage 2: workers that hash the staged files and move them into the catalog.

A ``MigrationWorker`` is a thread that loops: claim a small batch of staging
rows under a lease (``modelvault.queue``), hash each file with no
transaction open, then settle the hashed files in the catalog and close their
staging rows in one transaction that only commits for rows whose lease is
still its own (and claims the next batch in it). Each row's model, tags, links
and staging row change together or not at all; many tiny files share a
commit, a big file gets one of its own. While a long file is read, the lease
is renewed every quarter of its length, paused or not.

``process_pending`` runs a pool of such workers until nothing is left to claim
and returns a ``WorkerReport``. One ``HashControl`` pauses, resumes or stops the
whole pool; ``on_event`` receives ``WorkerEvent``s from the worker threads, for
progress bars, rates and ETAs.

What becomes of a row (DESIGN.md, "The pipeline and its guarantees"):

=========================  =====================================================
file hashed, settled       model imported / merged / moved; staging row deleted
same content, live path    staging row ``duplicate`` (sha256 set, tags merged)
path holds other content   staging row ``conflict`` (sha256 and reason kept)
file not found             staging row ``missing`` (attempts counted)
I/O error, stale handle,   back to ``pending`` after a doubling back-off, then
file changed or replaced,  ``failed`` after ``max_attempts``, with the last error
permission denied, a drive (never ``missing``: see ``modelvault.presence``)
or share that is not there
folder, FIFO, socket,      ``failed`` at once with the reason (no retry can cure
device, name too long,     it, see ``classify_os_error``); a FIFO or device is
symlink loop, relative     never opened for reading, so nothing blocks on one
path, ENOTDIR
tags that cannot be stored ``failed`` at once (no retry can cure them)
stop, or lease lost        handed back untouched / left to the new owner
=========================  =====================================================
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from modelvault.catalog import Outcome, Settled, file_name
from modelvault.config import CONFLICT_POLICIES, Settings
from modelvault.database import DatabaseManager
from modelvault.errors import (
    CatalogNotAnsweringError,
    ConfigError,
    HashCancelled,
    HashingError,
    MigrationError,
    ModelVaultError,
    NotRegularFileError,
    ValidationError,
)
from modelvault.file_stamp import stat_marks
from modelvault.hashing import FileDigest, HashControl, hash_file_digest
from modelvault.identify.catalog import AUTOV3, HeaderTap
from modelvault.normalize import is_absolute_path
from modelvault.pathkey import device_problem, reserved_device
from modelvault.presence import NotFound, after_not_found, too_long, too_long_message
from modelvault.queue import leases, overview, owner, states
from modelvault.queue.connection import HeldConnection
from modelvault.queue.finish import finish_batch
from modelvault.queue.rows import ClaimedRow, TagCache

log = logging.getLogger(__name__)

__all__ = [
    "EVENT_KINDS",
    "MigrationWorker",
    "WorkerEvent",
    "WorkerReport",
    "process_pending",
    "retry_pending",
]

# How often a paused or stopping worker looks at its flags, and how often the
# hashing loop calls back while paused (to renew leases and notice a stop).
HEARTBEAT_SECONDS = 0.1
# How often an idle worker looks for new work when rows are leased by others or
# waiting out a back-off (it wakes earlier when one is due, or at once on stop).
POLL_SECONDS = 0.5
MIN_IDLE_SECONDS = 0.02
# Hashed rows are settled together once they add up to this much, or after this
# long, or at the end of their batch (one transaction for many tiny files).
FINISH_EVERY_BYTES = 64 * 1024 * 1024
FINISH_EVERY_SECONDS = 1.0
# A batch whose files add up to less than this is light: hashing it takes less
# than cataloguing it, so a second worker on it would only wait for the first
# (see QueueSignal). Above it, hashing in parallel pays: measured on batches of
# 32 files, two workers took 0.99-1.10x the time of one on 2 MiB batches,
# 0.85-0.92x on 4 MiB ones and 0.60-0.64x on 8 MiB ones (bench/hash_bench.py, the mixes).
LIGHT_BATCH_BYTES = 4 * 1024 * 1024

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

# How often a worker waiting for leased rows checks whether their owner died.
ORPHAN_CHECK_SECONDS = 5.0
# How long a stopping worker keeps trying to hand its rows back to a failing catalog.
RELEASE_PATIENCE_SECONDS = 5.0

EventCallback = Callable[["WorkerEvent"], None]

_worker_numbers = itertools.count(1)


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


class _Stopping(Exception):
    """Raised from the progress callback to leave a hash when the worker must stop."""


class _LeaseLost(Exception):
    """Raised from the progress callback when another worker took the row over."""


class MigrationWorker(threading.Thread):
    """A thread that hashes staged files until the queue is empty or it is stopped.

    ``control`` pauses, resumes and stops it (share one with other workers to
    control them together); ``stop_event`` stops only the workers that share it.
    With ``exit_when_idle=False`` the worker keeps polling for new rows until
    stopped (for an app that keeps staging files while it runs).

    After ``join()``, ``report`` says what it did and ``error`` holds the
    exception that ended it early, if any (its rows were handed back first).
    """

    def __init__(
        self,
        db: DatabaseManager,
        *,
        settings: Settings | None = None,
        policy: str | None = None,
        control: HashControl | None = None,
        on_event: EventCallback | None = None,
        stop_event: threading.Event | None = None,
        name: str | None = None,
        exit_when_idle: bool = True,
        signal: QueueSignal | None = None,
    ) -> None:
        super().__init__(name=name or f"modelvault-worker-{next(_worker_numbers)}", daemon=True)
        self.db = db
        self.settings = settings or db.settings
        self.policy = check_policy(policy or self.settings.conflict_policy)
        self.control = control or HashControl()
        self.stop_event = stop_event or threading.Event()
        self.on_event = on_event
        self.exit_when_idle = exit_when_idle
        self.signal = signal or QueueSignal()
        # Unique per thread and run: a restarted worker never mistakes a dead
        # predecessor's leases for its own.
        self.owner = owner.new_owner(self.name)
        self.report = WorkerReport()
        self.error: BaseException | None = None
        self.done = threading.Event()  # set last thing in run(), after the rows went back
        self._held: dict[int, ClaimedRow] = {}  # claimed and not yet finished
        self._hashed: list[tuple[ClaimedRow, FileDigest]] = []  # hashed, not yet settled
        self._found: dict[int, dict[str, Any]] = {}  # what their headers said, by row id
        self._hashed_since = 0.0
        self._hashed_bytes = 0  # the size of the files in _hashed
        self._next_batch: list[ClaimedRow] = []  # claimed with the last commit, not started
        self._tag_cache = TagCache()
        self._connection = HeldConnection(db)  # for claims and finishes
        self._renew_every = max(self.settings.lease_seconds / 4, HEARTBEAT_SECONDS)
        self._next_renew = 0.0
        self._current: ClaimedRow | None = None  # the row being hashed
        self._hashing_id = 0  # the row _row_bytes belongs to
        self._row_bytes = 0
        self._pause_announced = False
        self._next_orphan_check = 0.0
        self._lane_refused = False  # the last claim took only a heavy batch, or nothing

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop soon; the rows it holds go back to the queue."""
        self.stop_event.set()
        self.signal.wake_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the worker is done (its rows handed back); False on timeout.

        Prefer this to ``join()`` where Ctrl-C may strike: in CPython 3.11 a
        KeyboardInterrupt that lands in ``join(timeout)`` marks a thread that
        is still running as finished, so the next ``join()`` returns at once and
        the process may exit while the worker is still handing its rows back.
        """
        return self.done.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set() or self.control.stopped

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        owner.running(self.owner)
        try:
            self._take_over_orphans()
            self._loop()
        except _Stopping:
            pass
        except Exception as exc:  # recorded for the pool; the rows are handed back below
            self.error = exc
            log.exception("worker %s failed", self.name)
        finally:
            try:
                self._finish_hashed_quietly()
                self._connection.close()
                self._release_held("stopped")
            finally:  # whatever happened, wait() must return
                self.signal.leave_lane(self)
                owner.stopped(self.owner)
                self.report.seconds = time.monotonic() - started
                self.signal.notify()
                self.done.set()

    def _loop(self) -> None:
        while not self.stopping:
            if self.control.paused:
                self._hold_while_paused()
                continue
            generation = self.signal.generation
            batch, self._next_batch = self._next_batch, []
            if not batch:
                claim = self._claim_wanted()
                batch = leases.claim_batch(
                    self.db,
                    self.owner,
                    limit=claim.limit,
                    lease_seconds=claim.lease_seconds,
                    min_bytes=claim.min_bytes,
                    held=self._connection,
                )
                self._claimed(batch)
            if batch:
                self._run_batch(batch)
                self.signal.notify()
                continue
            state = overview.queue_state(self.db)
            if state.wait_seconds is None and self.exit_when_idle:
                return
            if state.retry_files and self.on_event is not None:
                self._send(
                    WorkerEvent(
                        "waiting",
                        self.name,
                        0,
                        "",
                        files=state.retry_files,
                        seconds=state.retry_seconds,
                    )
                )
            if state.wait_seconds == 0 and self._lane_refused:
                # Small files are left and a peer is on them. Look again once it leaves
                # the lane, or after a while: heavy rows may come up meanwhile.
                self._wait_for_lane()
                continue
            check = bool(state.wait_seconds) and time.monotonic() >= self._next_orphan_check
            if check and self._take_over_orphans():  # rows of a worker that died meanwhile
                continue
            due = POLL_SECONDS if state.wait_seconds is None else state.wait_seconds
            # Never spin: a row that looks claimable may be in another worker's claim.
            self._idle(min(max(due, MIN_IDLE_SECONDS), POLL_SECONDS), generation)

    def _take_over_orphans(self) -> int:
        """Hand back the rows of workers on this host that provably died (see ``owner``)."""
        self._next_orphan_check = time.monotonic() + ORPHAN_CHECK_SECONDS
        return leases.take_over_orphans(self.db, owner.owner_prefix(), owner.provably_dead)

    def _claim_wanted(self) -> leases.Claim:
        """The next claim: anything in the light lane, only a heavy batch outside it."""
        in_lane = self.signal.enter_lane(self)
        self._lane_refused = not in_lane
        return leases.Claim(
            self.settings.worker_batch_size,
            self.settings.lease_seconds,
            min_bytes=0 if in_lane else LIGHT_BATCH_BYTES,
        )

    def _claimed(self, batch: list[ClaimedRow]) -> None:
        """Leave the light lane unless the batch just claimed is light."""
        if not batch:
            self.signal.leave_lane(self)
        elif leases.batch_bytes(batch) >= LIGHT_BATCH_BYTES:
            self.signal.leave_lane(self)
            self.signal.heavy_work()

    def _wait_for_lane(self) -> None:
        """Wait until the light lane is free, a stop, or ``POLL_SECONDS``.

        In heartbeats: ``control.stop()`` wakes nobody, it is looked for."""
        deadline = time.monotonic() + POLL_SECONDS
        while not self.stopping:
            left = deadline - time.monotonic()
            heartbeat = min(left, HEARTBEAT_SECONDS)
            if left <= 0 or self.signal.wait_for_lane(heartbeat, lambda: self.stopping):
                return

    def _idle(self, seconds: float, generation: int) -> None:
        """Wait ``seconds``, or less if a peer changes the queue or a stop arrives."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0 or self.signal.wait(generation, min(left, HEARTBEAT_SECONDS)):
                return

    def _hold_while_paused(self) -> None:
        """Paused between files: keep the leases of the batch alive, do nothing else."""
        while self.control.paused and not self.stopping:
            self._announce_pause()
            self._maybe_renew()
            self.control.wait_until_running(HEARTBEAT_SECONDS)  # wakes at once on resume
        self._pause_announced = False

    def _run_batch(self, batch: list[ClaimedRow]) -> None:
        """Hash the rows of a batch, and settle the hashed ones in few transactions."""
        self._held.update((row.id, row) for row in batch)
        self._next_renew = time.monotonic() + self._renew_every
        for row in batch:
            if self.control.paused:
                self._finish_hashed()  # commit what is done before holding still
                self._hold_while_paused()
            if self.stopping:
                raise _Stopping  # run() commits what is hashed and hands the rest back
            if row.id in self._held:  # not lost while an earlier file was hashed
                digest = self._hash(row)
                if digest is not None:
                    self._hashed.append((row, digest))
                    self._hashed_bytes += digest.size_bytes
            now = time.monotonic()
            if self._finish_due(now):
                self._finish_hashed()
            self._maybe_renew(now)
        self._finish_hashed(claim_next=True)

    def _finish_due(self, now: float) -> bool:
        """Commit hashed rows once they add up, so a crash never costs much re-reading."""
        if not self._hashed:
            return False
        waited = now - (self._hashed_since or now)
        return self._hashed_bytes >= FINISH_EVERY_BYTES or waited >= FINISH_EVERY_SECONDS

    # -- one row --------------------------------------------------------------

    def _hash(self, row: ClaimedRow) -> FileDigest | None:
        """Hash the row's file; on failure, record it and return None."""
        self._hashing_id, self._row_bytes = row.id, 0
        if self.on_event is not None:
            self._emit_claimed(row)
        problem = row.tag_problem()  # before the file is read: no hash can cure it
        if problem is not None:
            self._give_up(row, f"its tags cannot be stored: {problem}", final=True)
            return None
        problem_path = path_problem(row.path)
        if problem_path is not None:
            self._give_up(row, problem_path, final=True)
            return None
        self._current = row
        tap = HeaderTap(autov3=AUTOV3 in self.settings.hashes)
        try:
            digest = hash_file_digest(
                row.path,
                chunk_size=self.settings.hash_chunk_bytes,
                control=self.control,
                on_progress=self._on_progress,
                heartbeat_seconds=HEARTBEAT_SECONDS,
                tap=tap,
                beside=tap.beside(),
            )
        except (HashCancelled, _Stopping):
            raise _Stopping from None  # the row is still held: run() hands it back
        except _LeaseLost:
            self._released(row, "lease lost: another worker took the file over")
            return None
        except FileNotFoundError as exc:
            self._not_found(row, exc)
            return None
        except OSError as exc:  # FileChangedError counts too: the next try may find it settled
            message, permanent = classify_os_error(exc)
            self._give_up(row, message, final=permanent)
            return None
        finally:
            self._current = None
        self.report.files_hashed += 1
        if not self._hashed:
            self._hashed_since = time.monotonic()
        self._found[row.id] = tap.found(file_name(row.path))
        return digest

    def _emit_claimed(self, row: ClaimedRow) -> None:
        """The ``claimed`` event, with a size for the progress bar even if none was staged."""
        if row.size_bytes is not None:
            self._emit("claimed", row, bytes=row.size_bytes)
            return
        size = _size_now(row.path) if path_problem(row.path) is None else 0
        self._emit("claimed", row, bytes=size, unsized=True)

    def _finish_hashed(self, *, claim_next: bool = False) -> None:
        """Settle every hashed row in one transaction (see ``modelvault.queue.finish``).

        With ``claim_next``, the next batch is claimed in the same transaction.
        """
        hashed, self._hashed, self._hashed_bytes = self._hashed, [], 0
        if not hashed:
            return
        items = [
            (
                row.id,
                replace(
                    row.hashed(d.sha256, d.size_bytes, d.mtime_ns, stat_marks(d.stamp)),
                    found=self._found.pop(row.id, None),
                ),
            )
            for row, d in hashed
        ]
        claim = None
        if claim_next and not self.stopping and not self.control.paused:
            claim = self._claim_wanted()
        try:
            outcomes, claimed = finish_batch(
                self.db,
                self.owner,
                items,
                policy=self.policy,
                tag_cache=self._tag_cache,
                claim_next=claim,
                held=self._connection,
            )
        except (ValidationError, ValueError, RecursionError) as exc:
            # A row's data the catalog cannot take (a ValidationError, or an encoding
            # error the driver raises as it is, e.g. a lone surrogate): fail that row.
            if len(hashed) > 1:  # find the row that cannot be stored: one at a time
                for one in hashed:
                    self._hashed = [one]
                    self._finish_hashed()
                return
            row, _ = hashed[0]
            self._give_up(row, f"cannot be catalogued: {exc}", final=True)
            return
        self._held.update((row.id, row) for row in claimed)  # so a stop hands them back
        self._next_batch = claimed
        if claim is not None:
            self._claimed(claimed)
        for row, digest in hashed:
            self._report_outcome(row, digest, outcomes[row.id])

    def _report_outcome(self, row: ClaimedRow, digest: FileDigest, settled: Settled | None) -> None:
        self._held.pop(row.id, None)
        if settled is None:
            self._released(row, "lease lost before the file could be catalogued")
            return
        outcome = settled.outcome.value
        self.report.count(outcome)
        if settled.outcome is Outcome.CONFLICT:
            log.info("%s: conflict: %s", row.path, settled.reason)
        if self.on_event is None:  # no subscriber: no event to build
            return
        self._emit(
            "finished",
            row,
            bytes=digest.size_bytes,
            outcome=outcome,
            message=settled.reason,
            sha256=digest.sha256,
        )

    def _not_found(self, row: ClaimedRow, exc: FileNotFoundError) -> None:
        kind, message = after_not_found(row.path, exc)
        if kind is NotFound.GONE:
            self._missing(row, message)
        else:
            self._give_up(row, message, final=kind is NotFound.TOO_LONG)

    def _missing(self, row: ClaimedRow, message: str) -> None:
        if not leases.mark_missing(self.db, self.owner, row, message, held=self._connection):
            self._released(row, "lease lost")
            return
        self._held.pop(row.id, None)
        self.report.missing += 1
        self._emit("error", row, bytes=self._bytes_read(row), outcome="missing", message=message)
        self._emit("finished", row, outcome="missing", message=message)

    def _give_up(self, row: ClaimedRow, message: str, *, final: bool = False) -> None:
        """Count a failed attempt: retried after a back-off, or failed for good."""
        status = leases.record_failure(
            self.db,
            self.owner,
            row,
            message,
            max_attempts=self.settings.max_attempts,
            backoff_seconds=self.settings.retry_backoff_seconds,
            final=final,
            held=self._connection,
        )
        if status is None:
            self._released(row, "lease lost")
            return
        self._held.pop(row.id, None)
        outcome = "retried" if status == states.PENDING else "failed"
        self.report.count(outcome)
        log.info("%s: attempt %d: %s (%s)", row.path, row.attempts + 1, message, outcome)
        self._emit("error", row, bytes=self._bytes_read(row), outcome=outcome, message=message)
        if outcome == "failed":
            self._emit("finished", row, outcome="failed", message=message)

    def _released(self, row: ClaimedRow, why: str) -> None:
        self._held.pop(row.id, None)
        self.report.released += 1
        log.info("%s: %s", row.path, why)
        self._emit("released", row, bytes=self._bytes_read(row), message=why)

    def _bytes_read(self, row: ClaimedRow) -> int:
        """What was read of ``row``'s file in its last attempt (to take back from progress)."""
        return self._row_bytes if row.id == self._hashing_id else 0

    # -- leases ---------------------------------------------------------------

    def _on_progress(self, n: int) -> None:
        """Called by the hashing loop after each chunk, and every heartbeat while paused."""
        if n:
            self._row_bytes += n
            self.report.bytes_hashed += n
            self._pause_announced = False
            if self.on_event is not None and self._current is not None:
                self._emit("progress", self._current, bytes=n)
        elif self.control.paused:
            self._announce_pause()
        if self.stop_event.is_set():
            raise _Stopping
        if time.monotonic() >= self._next_renew:
            self._renew()
            if self._current is not None and self._current.id not in self._held:
                raise _LeaseLost

    def _maybe_renew(self, now: float | None = None) -> None:
        if self._held and (time.monotonic() if now is None else now) >= self._next_renew:
            self._renew()

    def _renew(self) -> None:
        self._next_renew = time.monotonic() + self._renew_every
        kept = leases.renew(
            self.db,
            self.owner,
            self._held.keys(),
            self.settings.lease_seconds,
            held=self._connection,
        )
        for row_id in [i for i in self._held if i not in kept]:
            row = self._held[row_id]
            if row is not self._current:  # the current row is reported by _process
                self._released(row, "lease lost: another worker took the file over")
            else:
                self._held.pop(row_id)

    def _finish_hashed_quietly(self) -> None:
        """On the way out: commit what was hashed, unless the catalog is what failed."""
        try:
            self._finish_hashed()
        except Exception as exc:  # still held: _release_held hands them back unsettled
            log.warning("worker %s could not commit its last files: %s", self.name, exc)
            self._hashed, self._hashed_bytes = [], 0

    def _release_held(self, why: str) -> None:
        """Hand back every row still held; each is counted once, as what became of it."""
        if not self._held:
            return
        rows = list(self._held.values())
        released = self._hand_back([row.id for row in rows])
        for row in rows:
            if released is None:
                self._abandoned(row)
            elif row.id in released:
                self._released(row, why)
            else:
                self._released(row, "lease lost: another worker took the file over")

    def _hand_back(self, ids: list[int]) -> set[int] | None:
        """``leases.release``, tried again for a while (the catalog may be back in a
        moment: a lock released, a connection restored); None if it never worked."""
        deadline = time.monotonic() + RELEASE_PATIENCE_SECONDS
        pause = MIN_IDLE_SECONDS
        while True:
            try:
                return leases.release(self.db, self.owner, ids)
            except Exception as exc:  # the last chance to hand them back: any failure may pass
                if time.monotonic() + pause > deadline:
                    log.warning(
                        "worker %s could not hand its %d rows back: %s; the next run on this "
                        "host takes them over, elsewhere they wait for their leases to run out",
                        self.name,
                        len(ids),
                        exc,
                    )
                    return None
                log.info("worker %s: handing rows back failed, trying again: %s", self.name, exc)
            time.sleep(pause)  # not the stop event: it is set when we get here
            pause = min(pause * 2, 1.0)

    def _abandoned(self, row: ClaimedRow) -> None:
        self._held.pop(row.id, None)
        self.report.abandoned += 1
        self._emit(
            "abandoned",
            row,
            bytes=self._bytes_read(row),
            message="left claimed: the catalog failed before it could be handed back",
        )

    # -- events ---------------------------------------------------------------

    def _announce_pause(self) -> None:
        if self._pause_announced:
            return
        self._pause_announced = True
        current = self._current
        if current is not None:
            self._emit("paused", current, bytes=self._row_bytes)
        elif self.on_event is not None:
            self._send(WorkerEvent("paused", self.name, 0, ""))

    def _emit(self, kind: str, row: ClaimedRow, **values: Any) -> None:
        if self.on_event is not None:
            self._send(WorkerEvent(kind, self.name, row.id, row.path, **values))

    def _send(self, event: WorkerEvent) -> None:
        assert self.on_event is not None
        try:
            self.on_event(event)
        except Exception:  # a broken progress display must not lose rows
            log.exception("on_event callback failed on %s", event)


def _size_now(path: str) -> int:
    """The size of the regular file at ``path``; 0 for anything else, or if it cannot be
    stat-ed (hashing says why). A stat opens nothing: a FIFO or a device cannot block it."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def check_policy(policy: str) -> str:
    if policy not in CONFLICT_POLICIES:
        raise ConfigError(
            f"conflict policy {policy!r} is not valid: use one of {', '.join(CONFLICT_POLICIES)}."
        )
    return policy


def describe_os_error(exc: OSError) -> str:
    """One line for ``last_error``: what failed, without a traceback."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {reason}"


# What no retry can cure: the path itself is wrong (too long, a symlink loop, a
# file where a folder should be, a folder where a file should be).
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR})


def classify_os_error(exc: OSError) -> tuple[str, bool]:
    """``(message, permanent)`` for a failed attempt at hashing a file.

    Permanent (``failed`` at once): not a regular file, and the errnos in
    ``PERMANENT_ERRNOS``. Everything else is worth a retry after a back-off: an
    I/O error, a stale NFS handle, a file that changed while it was read, a
    permission that may be granted (``FileNotFoundError`` is ``missing``, handled
    before this).
    """
    if isinstance(exc, HashingError):  # our own sentence: which file, what is wrong
        return str(exc), isinstance(exc, NotRegularFileError)
    if too_long(exc.errno, getattr(exc, "winerror", None)):
        return too_long_message(str(exc.filename or "the path")), True
    return describe_os_error(exc), exc.errno in PERMANENT_ERRNOS


def path_problem(path: str) -> str | None:
    """Why a staged path can never be hashed, before anything touches it; None if it may be."""
    if "\0" in path:
        return f"{path!r} contains a NUL character, which no file name can hold."
    # "/" first: the common case, without is_absolute_path's path parsing. A Windows
    # path on Linux is absolute: it ends missing.
    if not path.startswith("/") and not is_absolute_path(path):
        return (
            f"{path} is a relative path: it depends on the folder the worker runs in; "
            "stage the file by its absolute path."
        )
    device = reserved_device(path)
    if device is not None:  # opening it would read the device (CON: the console) forever
        return f"{path} {device_problem(device)}; rename the file and stage it again."
    return None


def process_pending(
    db: DatabaseManager | None = None,
    *,
    workers: int | None = None,
    settings: Settings | None = None,
    policy: str | None = None,
    control: HashControl | None = None,
    on_event: EventCallback | None = None,
) -> WorkerReport:
    """Hash everything in the staging queue with a pool of workers, then return.

    Returns when no row is pending or claimed any more (rows in back-off are
    waited for), or soon after ``control.stop()``, with the rows not finished
    handed back. ``db`` defaults to the catalog named by ``settings`` (migrated
    to the newest schema first); ``workers`` to ``settings.workers``; ``policy``
    to ``settings.conflict_policy``. If a worker fails (e.g. the catalog becomes
    unreachable), the others stop too and ``MigrationError`` is raised.
    """
    own_db = db is None
    if db is None:
        db = DatabaseManager(settings=settings)
        db.init_db()
    try:
        return _run_pool(db, workers, settings or db.settings, policy, control, on_event)
    finally:
        if own_db:
            db.dispose()


def _run_pool(
    db: DatabaseManager,
    workers: int | None,
    settings: Settings,
    policy: str | None,
    control: HashControl | None,
    on_event: EventCallback | None,
) -> WorkerReport:
    count = settings.workers if workers is None else workers
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"workers {count!r} is not valid: use a whole number of at least 1.")
    control = control or HashControl()
    stop = threading.Event()
    reserve = _Reserve()
    signal = QueueSignal(on_heavy_work=reserve.start)
    pool = [
        MigrationWorker(
            db,
            settings=settings,
            policy=policy,
            control=control,
            on_event=on_event,
            stop_event=stop,
            name=f"modelvault-worker-{i + 1}",
            signal=signal,
        )
        for i in range(count)
    ]
    overview.refresh_statistics(db)
    started = time.monotonic()
    reserve.hold(pool[1:])
    pool[0].start()
    try:
        _wait_all(pool, reserve)
    except BaseException:  # e.g. KeyboardInterrupt: hand the rows back before leaving
        pool[0].stop()  # they share the stop event
        _wait_all(pool, reserve)
        raise
    report = WorkerReport.combine((w.report for w in pool), seconds=time.monotonic() - started)
    errors = [w.error for w in pool if w.error is not None]
    if errors:
        raise _stopped_by(errors[0], report.abandoned) from errors[0]
    return report


def _stopped_by(error: BaseException, abandoned: int) -> ModelVaultError:
    """One sentence: what stopped the pool, where the rows went, what to do."""
    rows, them = ("1 row", "it") if abandoned == 1 else (f"{abandoned} rows", "them")
    where = (
        "the rows it held are back in the queue"
        if not abandoned
        else f"{rows} could not be handed back: the next run on this host takes {them} over "
        "at once, other hosts after the lease runs out"
    )
    if isinstance(error, CatalogNotAnsweringError):  # no "failed: ..." of a driver to quote
        then = f"{where}; check that the server runs and can be reached, then run the workers again"
        return CatalogNotAnsweringError(error.catalog, error.seconds, then)
    return MigrationError(
        f"a worker stopped on an error: {error}; {where}: fix the cause and run the workers again."
    )


class _Reserve:
    """The workers of a pool beyond the first, started only once one of them claims
    a batch worth hashing in parallel: on small files a pool is one worker (see
    ``QueueSignal``), and the others would only cost their start. Once the first
    worker is done, those never started are done too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[MigrationWorker] = []

    def hold(self, workers: list[MigrationWorker]) -> None:
        self._held = list(workers)

    def start(self) -> None:
        with self._lock:
            held, self._held = self._held, []
            for worker in held:
                worker.start()

    def close(self) -> None:
        """No start any more: the workers held back are done (they never ran)."""
        with self._lock:
            held, self._held = self._held, []
            for worker in held:
                worker.done.set()


def _wait_all(pool: list[MigrationWorker], reserve: _Reserve) -> None:
    """Wait for every worker to be done; the first one that fails stops the others."""
    alive = list(pool)
    while alive:
        for worker in list(alive):
            if worker.ident is None and not worker.done.is_set():
                continue  # held back, not started (yet)
            if worker.wait(HEARTBEAT_SECONDS):
                alive.remove(worker)
                if worker is pool[0]:
                    reserve.close()  # the first one alone starts the others: it is done
                if worker.error is not None:
                    worker.stop()  # the others share its stop event


def retry_pending(db: DatabaseManager, statuses: Iterable[str] = ("failed", "missing")) -> int:
    """Put rows with these final statuses back in the queue (attempts from zero)."""
    return overview.retry_pending(db, statuses)
