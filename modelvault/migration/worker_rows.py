"""One row in a worker's hands: its file hashed (``RowHasher.hash``) and handed to the
settler, or the failed attempt recorded (missing, retried, failed, lease lost)."""

from __future__ import annotations

import logging
import threading

from modelvault.catalog.values import file_name
from modelvault.config import Settings
from modelvault.database import DatabaseManager
from modelvault.errors import HashCancelled
from modelvault.hashing import FileDigest, HashControl, hash_file_digest
from modelvault.identify.catalog import AUTOV3, HeaderTap
from modelvault.migration.worker_batch import Settler
from modelvault.migration.worker_events import Accounts
from modelvault.migration.worker_files import classify_os_error, path_problem
from modelvault.migration.worker_leases import LeaseKeeper
from modelvault.presence import NotFound, after_not_found
from modelvault.queue import leases, states
from modelvault.queue.connection import HeldConnection
from modelvault.queue.rows import ClaimedRow

__all__ = ["RowHasher", "Stopping"]

log = logging.getLogger("modelvault.migration.worker")


class Stopping(Exception):
    """Raised from the progress callback to leave a hash when the worker must stop."""


class _LeaseLost(Exception):
    """Raised from the progress callback when another worker took the row over."""


class RowHasher:
    """Hashes the rows of a worker one at a time, and records what became of each."""

    def __init__(
        self,
        db: DatabaseManager,
        owner: str,
        settings: Settings,
        control: HashControl,
        stop_event: threading.Event,
        parts: tuple[HeldConnection, LeaseKeeper, Accounts, Settler],
        heartbeat_seconds: float,
    ) -> None:
        self.db = db
        self.owner = owner
        self.settings = settings
        self.control = control
        self.stop_event = stop_event
        self._connection, self._leases, self._accounts, self._settler = parts
        self._heartbeat_seconds = heartbeat_seconds

    def hash(self, row: ClaimedRow) -> None:
        """Hash the row's file and hand it to the settler; on failure, record why."""
        self._accounts.begin(row)
        problem = row.tag_problem()  # before the file is read: no hash can cure it
        if problem is not None:
            self.give_up(row, f"its tags cannot be stored: {problem}", final=True)
            return
        problem_path = path_problem(row.path)
        if problem_path is not None:
            self.give_up(row, problem_path, final=True)
            return
        tap = HeaderTap(autov3=AUTOV3 in self.settings.hashes)
        digest = self._read(row, tap)
        if digest is not None:
            self._accounts.report.files_hashed += 1
            self._settler.add(row, digest, tap.found(file_name(row.path)))

    def _read(self, row: ClaimedRow, tap: HeaderTap) -> FileDigest | None:
        """The digest of the row's file; None if reading it failed (recorded)."""
        self._accounts.current = row
        try:
            return hash_file_digest(
                row.path,
                chunk_size=self.settings.hash_chunk_bytes,
                control=self.control,
                on_progress=self._on_progress,
                heartbeat_seconds=self._heartbeat_seconds,
                tap=tap,
                beside=tap.beside(),
            )
        except (HashCancelled, Stopping):
            raise Stopping from None  # the row is still held: run() hands it back
        except _LeaseLost:
            self._leases.let_go(row, "lease lost: another worker took the file over")
        except FileNotFoundError as exc:
            self._not_found(row, exc)
        except OSError as exc:  # FileChangedError counts too: the next try may find it settled
            message, permanent = classify_os_error(exc)
            self.give_up(row, message, final=permanent)
        finally:
            self._accounts.current = None
        return None

    def _not_found(self, row: ClaimedRow, exc: FileNotFoundError) -> None:
        kind, message = after_not_found(row.path, exc)
        if kind is not NotFound.GONE:
            self.give_up(row, message, final=kind is NotFound.TOO_LONG)
        elif not leases.mark_missing(self.db, self.owner, row, message, held=self._connection):
            self._leases.let_go(row, "lease lost")
        else:
            self._leases.done(row)
            self._accounts.failed_attempt(row, "missing", message)

    def give_up(self, row: ClaimedRow, message: str, *, final: bool = False) -> None:
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
            self._leases.let_go(row, "lease lost")
            return
        self._leases.done(row)
        outcome = "retried" if status == states.PENDING else "failed"
        log.info("%s: attempt %d: %s (%s)", row.path, row.attempts + 1, message, outcome)
        self._accounts.failed_attempt(row, outcome, message)

    def _on_progress(self, n: int) -> None:
        """Called by the hashing loop after each chunk, and every heartbeat while paused."""
        if n:
            self._accounts.read(n)
        elif self.control.paused:
            self._accounts.announce_pause()
        if self.stop_event.is_set():
            raise Stopping
        if self._leases.renew_due():
            self._leases.renew()
            current = self._accounts.current
            if current is not None and not self._leases.holds(current):
                raise _LeaseLost
