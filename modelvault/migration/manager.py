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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from modelvault.database import DatabaseManager
from modelvault.errors import MigrationError, ModelVaultError
from modelvault.hashing import HashControl
from modelvault.migration.importer import ImportReport, import_legacy_data
from modelvault.migration.worker import WorkerEvent, WorkerReport, process_pending
from modelvault.scan import ScanReport, ScanRoot, checked_roots, scan_roots

log = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 10.0  # the rate is measured over this much recent time
PUBLISH_INTERVAL_SECONDS = 0.2  # progress events at most this often (state changes at once)
RECENT_ERRORS = 20


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
        self._subscribers: list[Subscriber] = []
        self._last_publish = 0.0
        self._outbox: deque[MigrationStatus] = deque()
        self._delivering = threading.RLock()
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
    ) -> bool:
        """Import the legacy file, then hash what was staged; returns at once.

        Returns False (and starts nothing) if a migration is already running.
        """
        return self._start(os.fspath(legacy_db_path), workers, policy)

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
        with self._changing():
            self._control.pause()
            if self._state is MigrationState.PROCESSING:
                self._set_state(MigrationState.PAUSED)

    def resume_processing(self) -> None:
        with self._changing():
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
        times a second at most), from the manager's threads. Returns an
        unsubscribe function. Keep callbacks quick; hand off to your UI thread."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

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
        *,
        scan: list[ScanRoot] | None = None,
    ) -> bool:
        with self._changing():
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
                args=(legacy_path, workers, policy, scan),
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
        scan: list[ScanRoot] | None = None,
    ) -> None:
        try:
            if scan is not None:
                found = scan_roots(self.db, scan, progress=self._on_scan)
                with self._lock:
                    self._progress.scan_report = found
            if legacy_path is not None:
                report = import_legacy_data(
                    legacy_path, self.db, progress=self._on_import, policy=policy
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
        with self._changing():
            self._progress.files_total, self._progress.bytes_total = files, size
            self._progress.samples.append((time.monotonic(), 0))
            self._set_state(
                MigrationState.PAUSED if self._control.paused else MigrationState.PROCESSING
            )

    def _finish(self, state: MigrationState) -> None:
        self._refresh_counts()
        with self._changing():
            self._set_state(state)

    def _fail(self, message: str) -> None:
        with self._changing():
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
        with self._changing():
            self._progress.files_scanned = files_seen
            self._publish(force=False)

    def _on_import(self, done: int, total: int) -> None:
        self._hold_or_stop()
        with self._changing():
            self._progress.rows_imported, self._progress.rows_to_import = done, total
            self._publish(force=False)

    def _on_worker_event(self, event: WorkerEvent) -> None:
        with self._changing():
            progress = self._progress
            if event.kind == "progress":
                progress.bytes_done += event.bytes
            elif event.kind in ("error", "released"):
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

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Change the state under the lock; deliver what that published after it."""
        with self._lock:
            yield
        self._deliver()

    def _deliver(self) -> None:
        """Hand queued snapshots to the subscribers, outside the lock, in order.

        One thread delivers at a time; a thread that finds another delivering
        leaves the queue to it, so a callback that waits for a thread calling
        pause_processing() cannot deadlock, and a slow callback never holds up
        the workers' progress counting.
        """
        while self._outbox:
            if not self._delivering.acquire(blocking=False):
                return
            try:
                while True:
                    with self._lock:
                        if not self._outbox:
                            break
                        snapshot = self._outbox.popleft()
                        subscribers = list(self._subscribers)
                    for callback in subscribers:
                        try:
                            callback(snapshot)
                        except Exception:  # a broken UI callback must not break the migration
                            log.exception("progress subscriber %r failed", callback)
            finally:
                self._delivering.release()

    def _set_state(self, state: MigrationState) -> None:
        self._state = state
        self._publish(force=True)

    def _publish(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_publish < PUBLISH_INTERVAL_SECONDS:
            return
        self._last_publish = now
        self._outbox.append(self._snapshot())  # delivered by _deliver() once the lock is free

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
            files_scanned=p.files_scanned,
            scan_report=p.scan_report.to_dict() if p.scan_report else None,
        )


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
