"""The state of a manager's run and who is told of it (``StatusBoard``): state and
stage, progress, the staging counts, and the subscribers it is published to."""

from __future__ import annotations

import logging
import threading
import time

from modelvault.database import DatabaseManager
from modelvault.errors import ModelVaultError
from modelvault.migration.status import RUNNING_STATES, MigrationState, MigrationStatus, RunProgress
from modelvault.migration.subscribers import Subscribers
from modelvault.migration.worker_events import WorkerEvent

__all__ = ["PUBLISH_INTERVAL_SECONDS", "StatusBoard"]

log = logging.getLogger("modelvault.migration.manager")

PUBLISH_INTERVAL_SECONDS = 0.2  # progress events at most this often (state changes at once)


class StatusBoard:
    """What a manager's run is at, under one lock, published to its subscribers."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db
        self.lock = threading.RLock()
        self.state = MigrationState.IDLE
        self.stage: MigrationState | None = None  # the stage running, also while paused
        self.progress = RunProgress()
        self.subscribers: Subscribers[MigrationStatus] = Subscribers(kind=_state_of)
        self._last_publish = 0.0
        self._staging_counts: dict[str, int] = {}

    @property
    def running(self) -> bool:
        with self.lock:
            return self.state in RUNNING_STATES

    def status(self, *, refresh: bool) -> MigrationStatus:
        """The current snapshot; ``refresh`` re-reads the staging counts from the catalog."""
        if refresh:
            self.refresh_counts()
        with self.lock:
            return self._snapshot()

    def enter_stage(self, stage: MigrationState, *, paused: bool) -> None:
        """Under the lock: the run goes on to ``stage`` (and stays paused if it is)."""
        self.stage = stage
        self.set_state(MigrationState.PAUSED if paused else stage)

    def begin_processing(self, *, paused: bool) -> None:
        """Stage 2 begins: what it has to do, as the catalog counts it now."""
        totals = self.db.claimable_totals()
        with self.lock:
            self.progress.begin_processing(
                totals.files, totals.bytes, totals.unsized, time.monotonic()
            )
            self.enter_stage(MigrationState.PROCESSING, paused=paused)

    def finish(self, state: MigrationState) -> None:
        self.refresh_counts()
        with self.lock:
            self.set_state(state)

    def fail(self, message: str) -> None:
        with self.lock:
            self.progress.error = message
            self.progress.errors.append(message)
            self.set_state(MigrationState.FAILED)

    def scanned(self, files_seen: int) -> None:
        with self.lock:
            self.progress.files_scanned = files_seen
            self.publish(force=False)

    def imported(self, done: int, total: int) -> None:
        with self.lock:
            self.progress.rows_imported, self.progress.rows_to_import = done, total
            self.publish(force=False)

    def worker_event(self, event: WorkerEvent) -> None:
        with self.lock:
            self.progress.apply(event, time.monotonic())
            self.publish(force=False)

    def refresh_counts(self) -> None:
        try:
            counts = self.db.staging_counts()
        except ModelVaultError as exc:  # status must answer even if the catalog hiccups
            log.warning("cannot read staging counts: %s", exc)
            return
        with self.lock:
            self._staging_counts = counts

    def set_state(self, state: MigrationState) -> None:
        self.state = state
        self.publish(force=True)

    def publish(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_publish < PUBLISH_INTERVAL_SECONDS:
            return
        self._last_publish = now
        self.subscribers.post(self._snapshot())  # never waits: delivery threads call back

    def _snapshot(self) -> MigrationStatus:
        stage = self.stage if self.state in RUNNING_STATES else None
        return self.progress.snapshot(self.state, stage, self._staging_counts, time.monotonic())


def _state_of(status: MigrationStatus) -> MigrationState:
    return status.state
