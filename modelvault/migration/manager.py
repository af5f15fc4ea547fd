"""MigrationManager: run both stages in the background and tell an app how it goes.

One manager per catalog (``MigrationManager.for_database(db)``), safe to call
from any thread: an app's UI thread starts, pauses, resumes and stops; the
manager's own thread runs the import and then the worker pool; progress reaches
the app through ``subscribe(callback)`` without polling, or ``status()`` on demand.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from modelvault.database import DatabaseManager
from modelvault.errors import MigrationError, ModelVaultError
from modelvault.hashing import HashControl
from modelvault.migration.importer import ImportReport, import_legacy_data
from modelvault.migration.worker import WorkerEvent, WorkerReport, process_pending
from modelvault.scan import (
    ScanReport,
    ScanRoot,
    checked_roots,
    scan_roots,
    settle_after_hashing,
)

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 10.0  # the rate is measured over this much recent time
PUBLISH_INTERVAL_SECONDS = 0.2  # progress events at most this often (state changes at once)
RECENT_ERRORS = 20
MAILBOX_SIZE = 16  # state changes queued for a slow subscriber; progress coalesces


class MigrationState(str, enum.Enum):
    IDLE = "idle"
    SCANNING = "scanning"
    IMPORTING = "importing"
    PROCESSING = "processing"
    PAUSED = "paused"
    STOPPED = "stopped"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


RUNNING_STATES = frozenset(
    {
        MigrationState.SCANNING,
        MigrationState.IMPORTING,
        MigrationState.PROCESSING,
        MigrationState.PAUSED,
    }
)


@dataclass(frozen=True)
class MigrationStatus:
    """A snapshot of a migration, fit for a UI or ``json.dumps(status.to_dict())``."""

    state: MigrationState
    legacy_path: str | None
    rows_imported: int  # stage 1 progress: legacy rows read so far
    rows_to_import: int
    files_done: int  # stage 2 progress: staged rows that reached a final place
    files_total: int
    bytes_done: int
    bytes_total: int
    rate_bytes_per_second: float
    eta_seconds: float | None
    elapsed_seconds: float
    staging_counts: dict[str, int]  # staging rows per status, as of the last refresh
    recent_errors: tuple[str, ...]
    error: str | None
    import_report: dict[str, Any] | None
    worker_report: dict[str, Any] | None
    current_file: str | None = None  # the path claimed last of those being hashed
    files_scanned: int = 0  # scan progress (start_scan): files looked at so far
    scan_report: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["recent_errors"] = list(self.recent_errors)
        return data


Subscriber = Callable[[MigrationStatus], None]


@dataclass
class _Progress:
    """Mutable counters behind ``status()``; guarded by the manager's lock."""

    legacy_path: str | None = None
    rows_imported: int = 0
    rows_to_import: int = 0
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    started: float = 0.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    staged_sizes: dict[int, int] = field(default_factory=dict)  # row id -> size when claimed
    hashing: dict[int, str] = field(default_factory=dict)  # row id -> path, in claim order
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))
    error: str | None = None
    import_report: ImportReport | None = None
    worker_report: WorkerReport | None = None
    files_scanned: int = 0
    scan_report: ScanReport | None = None

    def rate(self, now: float) -> float:
        while len(self.samples) > 2 and now - self.samples[1][0] > RATE_WINDOW_SECONDS:
            self.samples.popleft()
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


class MigrationManager:
    """Runs and controls the migration of one catalog."""

    _registry: ClassVar[dict[str, MigrationManager]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db
        self._lock = threading.RLock()
        self._state = MigrationState.IDLE
        self._progress = _Progress()
        self._control = HashControl()
        self._finished = threading.Event()
        self._finished.set()  # no run yet
        self._last_publish = 0.0
        self._mailbox = _Mailbox()
        self._staging_counts: dict[str, int] = {}

    @classmethod
    def for_database(cls, db: DatabaseManager) -> MigrationManager:
        """The manager of ``db``'s catalog: the same object for the same catalog URL."""
        key = db.engine.url.render_as_string(hide_password=False)
        with cls._registry_lock:
            manager = cls._registry.get(key)
            if manager is None:
                manager = cls._registry[key] = cls(db)
            return manager

    # -- control --------------------------------------------------------------

    def start_full_migration(
        self,
        legacy_db_path: str | os.PathLike[str],
        *,
        workers: int | None = None,
        policy: str | None = None,
        images_dir: str | os.PathLike[str] | None = None,
    ) -> bool:
        """Import the legacy file, then hash what was staged; returns at once.

        ``images_dir``: the legacy preview images (default ``images/`` beside the
        legacy file; see ``import_legacy_data``). Returns False (and starts
        nothing) if a migration is already running.
        """
        images = None if images_dir is None else os.fspath(images_dir)
        return self._start(os.fspath(legacy_db_path), workers, policy, images)

    def start_processing(self, *, workers: int | None = None, policy: str | None = None) -> bool:
        """Only stage 2: hash what is staged (e.g. after a restart). False if running."""
        return self._start(None, workers, policy)

    def start_scan(
        self,
        roots: Sequence[ScanRoot | str | os.PathLike[str]],
        *,
        workers: int | None = None,
        policy: str | None = None,
    ) -> bool:
        """Scan model folders (``modelvault.scan``), then hash what the scan staged.

        Pause, resume, stop and progress work as in a migration (a pause or stop
        takes effect between batches of the scan). Raises ``ScanError`` at once
        if a root is not a folder; returns False if a run is already going.
        """
        return self._start(None, workers, policy, scan=checked_roots(roots))

    def pause_processing(self) -> None:
        """Pause hashing within a fraction of a second; the hashes in progress are kept."""
        with self._lock:
            self._control.pause()
            if self._state is MigrationState.PROCESSING:
                self._set_state(MigrationState.PAUSED)

    def resume_processing(self) -> None:
        with self._lock:
            self._control.resume()
            if self._state is MigrationState.PAUSED:
                self._set_state(MigrationState.PROCESSING)

    def stop(self) -> None:
        """Stop soon: the import stops after its current batch, workers release their rows."""
        with self._lock:
            self._control.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True if it has (or none was running)."""
        # An Event, not Thread.join: a KeyboardInterrupt landing in join() can
        # leave the thread marked finished while it is still handing rows back.
        return self._finished.wait(timeout)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state in RUNNING_STATES

    # -- progress -------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(status)`` on every state change and on progress (a few
        times a second at most). Returns an unsubscribe function.

        Callbacks run one after another in the manager's delivery thread, never
        in the thread that started, paused or stopped the run and never under a
        lock: a callback may call the manager. A slow one misses progress
        snapshots (it gets the latest when it returns), and one that never
        returns holds up only later deliveries, never the migration, ``stop()``
        or ``wait()``. Hand off to your UI thread.
        """
        return self._mailbox.subscribe(callback)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every status published so far reached the subscribers; False on timeout."""
        return self._mailbox.flush(timeout)

    def status(self, *, refresh: bool = True) -> MigrationStatus:
        """The current snapshot; ``refresh`` re-reads the staging counts from the catalog."""
        if refresh:
            self._refresh_counts()
        with self._lock:
            return self._snapshot()

    # -- the run --------------------------------------------------------------

    def _start(
        self,
        legacy_path: str | None,
        workers: int | None,
        policy: str | None,
        images_dir: str | None = None,
        *,
        scan: list[ScanRoot] | None = None,
    ) -> bool:
        with self._lock:
            if self._state in RUNNING_STATES:
                return False
            paused = self._control.paused and not self._control.stopped
            self._control = HashControl()
            if paused:
                self._control.pause()
            self._progress = _Progress(legacy_path=legacy_path, started=time.monotonic())
            first = MigrationState.IMPORTING if legacy_path else MigrationState.PROCESSING
            if scan is not None:
                first = MigrationState.SCANNING
            self._set_state(first)
            self._finished.clear()
            thread = threading.Thread(
                target=self._run,
                args=(legacy_path, workers, policy, images_dir, scan),
                name="modelvault-migration",
                daemon=True,
            )
            thread.start()
        return True

    def _run(
        self,
        legacy_path: str | None,
        workers: int | None,
        policy: str | None,
        images_dir: str | None,
        scan: list[ScanRoot] | None = None,
    ) -> None:
        try:
            if scan is not None:
                found = scan_roots(
                    self.db,
                    scan,
                    progress=self._on_scan,
                    policy=policy or self.db.settings.conflict_policy,
                )
                with self._lock:
                    self._progress.scan_report = found
            if legacy_path is not None:
                report = import_legacy_data(
                    legacy_path,
                    self.db,
                    progress=self._on_import,
                    policy=policy,
                    images_dir=images_dir,
                )
                with self._lock:
                    self._progress.import_report = report
            if self._control.stopped:
                self._finish(MigrationState.STOPPED)
                return
            self._begin_processing()
            result = process_pending(
                self.db,
                workers=workers,
                policy=policy,
                control=self._control,
                on_event=self._on_worker_event,
            )
            if scan is not None and not self._control.stopped:
                settle_after_hashing(self.db, found)  # moves the workers settled
            with self._lock:
                self._progress.worker_report = result
            self._finish(MigrationState.STOPPED if self._control.stopped else MigrationState.DONE)
        except _Stopped:
            self._finish(MigrationState.STOPPED)
        except ModelVaultError as exc:
            self._fail(str(exc))
        except Exception as exc:  # the thread must always end in a final state
            log.exception("migration failed")
            self._fail(f"unexpected error: {exc!r}")
        finally:
            self._finished.set()

    def _begin_processing(self) -> None:
        files, size = self.db.claimable_totals()
        with self._lock:
            self._progress.files_total, self._progress.bytes_total = files, size
            self._progress.samples.append((time.monotonic(), 0))
            self._set_state(
                MigrationState.PAUSED if self._control.paused else MigrationState.PROCESSING
            )

    def _finish(self, state: MigrationState) -> None:
        self._refresh_counts()
        with self._lock:
            self._set_state(state)

    def _fail(self, message: str) -> None:
        with self._lock:
            self._progress.error = message
            self._progress.errors.append(message)
            self._set_state(MigrationState.FAILED)

    def _hold_or_stop(self) -> None:
        """Between committed batches of stage 1 or a scan: a pause holds here too."""
        while not self._control.wait_until_running(1.0):
            pass
        if self._control.stopped:
            raise _Stopped  # each batch is committed: running again completes the rest

    def _on_scan(self, files_seen: int) -> None:
        self._hold_or_stop()
        with self._lock:
            self._progress.files_scanned = files_seen
            self._publish(force=False)

    def _on_import(self, done: int, total: int) -> None:
        self._hold_or_stop()
        with self._lock:
            self._progress.rows_imported, self._progress.rows_to_import = done, total
            self._publish(force=False)

    def _on_worker_event(self, event: WorkerEvent) -> None:
        with self._lock:
            progress = self._progress
            if event.kind == "claimed":
                progress.hashing[event.row_id] = event.path
            elif event.kind in ("finished", "error", "released", "abandoned"):  # claim ends
                progress.hashing.pop(event.row_id, None)
            if event.kind == "progress":
                progress.bytes_done += event.bytes
            elif event.kind in ("error", "released", "abandoned"):
                # Those bytes will be read again: take them back so the bar stays honest.
                progress.bytes_done -= event.bytes
                if event.kind == "error" and event.message:
                    progress.errors.append(f"{event.path}: {event.message}")
            elif event.kind == "claimed":
                progress.staged_sizes[event.row_id] = event.bytes
            elif event.kind == "finished":
                progress.files_done += 1
                # The staged size was a promise; what the file really held (nothing,
                # if it is gone) is what the total must count.
                progress.bytes_total += event.bytes - progress.staged_sizes.pop(event.row_id, 0)
                if event.outcome in ("missing", "failed", "conflict") and event.message:
                    progress.errors.append(f"{event.path}: {event.outcome}: {event.message}")
            progress.samples.append((time.monotonic(), progress.bytes_done))
            self._publish(force=False)

    def _refresh_counts(self) -> None:
        try:
            counts = self.db.staging_counts()
        except ModelVaultError as exc:  # status must answer even if the catalog hiccups
            log.warning("cannot read staging counts: %s", exc)
            return
        with self._lock:
            self._staging_counts = counts

    def _set_state(self, state: MigrationState) -> None:
        self._state = state
        self._publish(force=True)

    def _publish(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_publish < PUBLISH_INTERVAL_SECONDS:
            return
        self._last_publish = now
        self._mailbox.post(self._snapshot())  # never waits: the delivery thread calls back

    def _snapshot(self) -> MigrationStatus:
        p = self._progress
        now = time.monotonic()
        rate = p.rate(now)
        remaining = max(0, p.bytes_total - p.bytes_done)
        eta = remaining / rate if rate > 0 else (0.0 if p.bytes_total and not remaining else None)
        return MigrationStatus(
            state=self._state,
            legacy_path=p.legacy_path,
            rows_imported=p.rows_imported,
            rows_to_import=p.rows_to_import,
            files_done=p.files_done,
            files_total=p.files_total,
            bytes_done=p.bytes_done,
            bytes_total=p.bytes_total,
            rate_bytes_per_second=rate,
            eta_seconds=eta,
            elapsed_seconds=(now - p.started) if p.started else 0.0,
            staging_counts=dict(self._staging_counts),
            recent_errors=tuple(p.errors),
            error=p.error,
            import_report=p.import_report.to_dict() if p.import_report else None,
            worker_report=p.worker_report.to_dict() if p.worker_report else None,
            current_file=next(reversed(p.hashing.values()), None),
            files_scanned=p.files_scanned,
            scan_report=p.scan_report.to_dict() if p.scan_report else None,
        )


class _Mailbox:
    """Statuses on their way to the subscribers: a bounded queue and ONE delivery thread.

    ``post`` never waits and never calls a subscriber, so no caller's thread
    (an app's, a worker's, the manager's) can be stalled by one. A status
    replaces a queued one of the same state (progress coalesces: a slow
    subscriber gets the latest, not a backlog); state changes queue up to
    ``MAILBOX_SIZE``, the oldest dropped beyond. The thread is a daemon that
    starts when there is something to deliver and ends when there is nothing
    left, so a subscriber that never returns strands only that thread.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: deque[MigrationStatus] = deque()
        self._subscribers: list[Subscriber] = []
        self._delivering = False

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        with self._changed:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._changed:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def post(self, status: MigrationStatus) -> None:
        with self._changed:
            if not self._subscribers:
                return
            if self._queue and self._queue[-1].state is status.state:
                self._queue[-1] = status
            else:
                self._queue.append(status)
                while len(self._queue) > MAILBOX_SIZE:
                    self._queue.popleft()
            if not self._delivering:
                self._delivering = True
                threading.Thread(
                    target=self._deliver, name="modelvault-subscribers", daemon=True
                ).start()

    def flush(self, timeout: float | None = None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._delivering, timeout)

    def _deliver(self) -> None:
        while True:
            with self._changed:
                if not self._queue:
                    self._delivering = False
                    self._changed.notify_all()
                    return
                status = self._queue.popleft()
                subscribers = list(self._subscribers)
            for callback in subscribers:  # outside the lock: a callback may call the manager
                try:
                    callback(status)
                except Exception:  # a broken UI callback must not break the migration
                    log.exception("progress subscriber %r failed", callback)


class _Stopped(MigrationError):
    """Raised inside the import to end it early when stop() was called."""


_default_lock = threading.Lock()
_default_manager: MigrationManager | None = None


def get_manager() -> MigrationManager:
    """The manager of the configured catalog (``MODELVAULT_*`` settings), made once."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = MigrationManager.for_database(DatabaseManager())
        return _default_manager
