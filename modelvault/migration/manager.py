"""MigrationManager: run both stages in the background and tell an app how it goes.

One manager per catalog (``MigrationManager.for_database(db)``), safe to call
from any thread: an app's UI thread starts, pauses, resumes and stops; the
manager's own thread runs the import and then the worker pool; progress reaches
the app through ``subscribe(callback)`` without polling, or ``status()`` on demand.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import ClassVar

from modelvault.database import DatabaseManager
from modelvault.errors import HashCancelled, ModelVaultError
from modelvault.hashing import HashControl
from modelvault.migration.importer import import_legacy_data
from modelvault.migration.manager_board import StatusBoard
from modelvault.migration.status import (
    RUNNING_STATES,
    STAGES,
    MigrationState,
    MigrationStatus,
    RunProgress,
)
from modelvault.migration.worker import process_pending
from modelvault.scan import ScanRoot, checked_roots, scan_roots, settle_after_hashing

__all__ = ["MigrationManager", "MigrationState", "MigrationStatus", "Subscriber", "get_manager"]

log = logging.getLogger(__name__)

Subscriber = Callable[[MigrationStatus], None]


class MigrationManager:
    """Runs and controls the migration of one catalog."""

    _registry: ClassVar[dict[str, MigrationManager]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db
        self._board = StatusBoard(db)
        self._lock = self._board.lock
        self._control = HashControl()
        self._finished = threading.Event()
        self._finished.set()  # no run yet

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
        """Pause hashing within a fraction of a second; the hashes in progress are kept.

        A scan or an import pauses after the batch it is on (each is committed);
        the state is ``paused`` at once, and ``stage`` says which one holds.
        """
        with self._lock:
            self._control.pause()
            if self._board.state in STAGES:
                self._board.set_state(MigrationState.PAUSED)

    def resume_processing(self) -> None:
        with self._lock:
            self._control.resume()
            board = self._board
            if board.state is MigrationState.PAUSED and board.stage is not None:
                board.set_state(board.stage)

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
        return self._board.running

    # -- progress -------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(status)`` on every state change and on progress (a few
        times a second at most). Returns an unsubscribe function.

        Each callback runs in a delivery thread of its own, never in the thread
        that started, paused or stopped the run and never under a lock: a
        callback may call the manager. A slow one misses progress snapshots (it
        gets the latest when it returns); one that never returns delays nothing
        but itself: not the other subscribers, the migration, ``stop()`` or
        ``wait()``. Whatever a callback raises (even ``SystemExit`` or
        ``KeyboardInterrupt``) is logged and ends nothing. Hand off to your UI
        thread. After unsubscribing, the callback is not called again and its
        thread ends (when the call in progress returns).
        """
        return self._board.subscribers.subscribe(callback)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every subscriber was given a status as new as the newest published
        so far; False on timeout. From a callback it raises ``MigrationError`` (it
        would wait for that callback itself)."""
        return self._board.subscribers.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Shut down: stop the run, if one is going, and wait up to ``timeout`` for it
        to end (files in progress go back to the queue); then hand the subscribers
        what is left for them and end their threads (one whose callback does not
        return within a few seconds is abandoned, with a warning). Returns False
        if the run did not end in time. The manager may be used again after.
        Also ``with MigrationManager(db) as manager: ...``.
        """
        self.stop()
        ended = self.wait(timeout)
        self._board.subscribers.close()
        return ended

    def __enter__(self) -> MigrationManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def status(self, *, refresh: bool = True) -> MigrationStatus:
        """The current snapshot; ``refresh`` re-reads the staging counts from the catalog."""
        return self._board.status(refresh=refresh)

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
            if self._board.state in RUNNING_STATES:
                return False
            paused = self._control.paused and not self._control.stopped
            self._control = HashControl()
            if paused:
                self._control.pause()
            self._board.progress = RunProgress(legacy_path=legacy_path, started=time.monotonic())
            first = MigrationState.IMPORTING if legacy_path else MigrationState.PROCESSING
            if scan is not None:
                first = MigrationState.SCANNING
            self._board.enter_stage(first, paused=self._control.paused)
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
                    progress=self._board.scanned,
                    policy=policy or self.db.settings.conflict_policy,
                    control=self._control,
                )
                with self._lock:
                    self._board.progress.scan_report = found
            if legacy_path is not None:
                report = import_legacy_data(
                    legacy_path,
                    self.db,
                    progress=self._board.imported,
                    policy=policy,
                    images_dir=images_dir,
                    control=self._control,
                )
                with self._lock:
                    self._board.progress.import_report = report
            if self._control.stopped:
                self._board.finish(MigrationState.STOPPED)
                return
            self._board.begin_processing(paused=self._control.paused)
            result = process_pending(
                self.db,
                workers=workers,
                policy=policy,
                control=self._control,
                on_event=self._board.worker_event,
            )
            if scan is not None and not self._control.stopped:
                settle_after_hashing(self.db, found)  # moves the workers settled
            with self._lock:
                self._board.progress.worker_report = result
            stopped = self._control.stopped
            self._board.finish(MigrationState.STOPPED if stopped else MigrationState.DONE)
        except HashCancelled:  # between batches: each is committed, a new run completes the rest
            self._board.finish(MigrationState.STOPPED)
        except ModelVaultError as exc:
            self._board.fail(str(exc))
        except Exception as exc:  # the thread must always end in a final state
            log.exception("migration failed")
            self._board.fail(f"unexpected error: {exc!r}")
        finally:
            self._finished.set()


_default_lock = threading.Lock()
_default_manager: MigrationManager | None = None


def get_manager() -> MigrationManager:
    """The manager of the configured catalog (``MODELVAULT_*`` settings), made once."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = MigrationManager.for_database(DatabaseManager())
        return _default_manager
