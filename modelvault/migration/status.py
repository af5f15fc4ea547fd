"""What a migration's status says: its states, the snapshot an app is given, and the
counters behind it, kept up to date from the workers' events.

Progress never claims more than is done. While a file remains, the fraction
stays below 1 and the ETA is unknown or at least a second. Bytes are the
measure while every file still to hash has a known size; while some have none
(a legacy row without ``size_bytes``: its file is stat-ed only when a worker
claims it), progress is counted in files, and the ETA guesses those files at
the mean size of the others. A wait for a retry back-off is said as such, with
its length, rather than shown as a stalled bar.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from modelvault.migration.importer import ImportReport
from modelvault.migration.worker import WorkerEvent, WorkerReport
from modelvault.scan.report import ScanReport

RATE_WINDOW_SECONDS = 10.0  # the rate is measured over this much recent time
RECENT_ERRORS = 20
ALMOST_DONE = 0.999  # the most a fraction says while a file remains
MIN_ETA_SECONDS = 1.0  # the least an ETA says while a file remains


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


STAGES = frozenset({MigrationState.SCANNING, MigrationState.IMPORTING, MigrationState.PROCESSING})
RUNNING_STATES = STAGES | {MigrationState.PAUSED}


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
    bytes_total: int  # the known sizes (see files_unsized)
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
    stage: str | None = None  # scanning, importing or processing, also while paused
    fraction: float | None = None  # of stage 2 done (None before it is counted), < 1 until done
    progress_by: str = "bytes"  # what fraction and ETA measure: "bytes", or "files"
    files_unsized: int = 0  # files still to hash whose size is not known yet
    retry_files: int = 0  # while the workers wait for a retry back-off: the files waiting
    retry_in_seconds: float | None = None  # and how long until the first may be retried
    waiting: str | None = None  # that wait in words: "waiting 30 s to retry 2 files"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["recent_errors"] = list(self.recent_errors)
        return data


@dataclass
class RunProgress:
    """The counters of one run behind ``MigrationManager.status()``; not thread-safe
    (the manager guards it with its lock). ``now`` is ``time.monotonic()``."""

    legacy_path: str | None = None
    rows_imported: int = 0
    rows_to_import: int = 0
    files_done: int = 0
    files_total: int = 0
    files_unsized: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    started: float = 0.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)  # (now, bytes_done)
    counted_sizes: dict[int, int] = field(default_factory=dict)  # row id -> its part of the total
    hashing: dict[int, str] = field(default_factory=dict)  # row id -> path, in claim order
    retry_files: int = 0  # as the last "waiting" event said, until the next claim
    retry_due: float = 0.0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))
    error: str | None = None
    import_report: ImportReport | None = None
    worker_report: WorkerReport | None = None
    files_scanned: int = 0
    scan_report: ScanReport | None = None

    def begin_processing(self, files: int, known_bytes: int, unsized: int, now: float) -> None:
        """Stage 2 starts with ``files`` to hash, ``unsized`` of them of no known size."""
        self.files_total, self.bytes_total, self.files_unsized = files, known_bytes, unsized
        self.samples.append((now, self.bytes_done))

    # -- the workers' events --------------------------------------------------

    def apply(self, event: WorkerEvent, now: float) -> None:
        """Count one ``WorkerEvent`` (see its docstring for what each kind means)."""
        kind = event.kind
        if kind == "claimed":
            self._claimed(event)
        elif kind in ("finished", "error", "released", "abandoned"):  # the claim ends
            self.hashing.pop(event.row_id, None)
        if kind == "progress":
            self.bytes_done += event.bytes
        elif kind in ("error", "released", "abandoned"):
            # Those bytes will be read again: take them back so the bar stays honest.
            self.bytes_done -= event.bytes
            if kind == "error" and event.message:
                self.errors.append(f"{event.path}: {event.message}")
        elif kind == "finished":
            self.files_done += 1
            # The counted size was a promise; what the file really held (nothing,
            # if it is gone) is what the total must count.
            self.bytes_total += event.bytes - self.counted_sizes.pop(event.row_id, 0)
            if event.outcome in ("missing", "failed", "conflict") and event.message:
                self.errors.append(f"{event.path}: {event.outcome}: {event.message}")
        elif kind == "waiting":
            self.retry_files, self.retry_due = event.files, now + (event.seconds or 0.0)
        self.samples.append((now, self.bytes_done))

    def _claimed(self, event: WorkerEvent) -> None:
        self.hashing[event.row_id] = event.path
        self.retry_files = 0  # work again: the next wait is said by the next event
        if event.unsized:  # a size learnt now: the total grows by it (once per row)
            if event.row_id not in self.counted_sizes:
                self.files_unsized = max(0, self.files_unsized - 1)
            self.bytes_total += event.bytes - self.counted_sizes.get(event.row_id, 0)
        self.counted_sizes[event.row_id] = event.bytes

    # -- what they add up to --------------------------------------------------

    def snapshot(
        self,
        state: MigrationState,
        stage: MigrationState | None,
        staging_counts: dict[str, int],
        now: float,
    ) -> MigrationStatus:
        wait = self.retry_wait(now)
        return MigrationStatus(
            state=state,
            legacy_path=self.legacy_path,
            rows_imported=self.rows_imported,
            rows_to_import=self.rows_to_import,
            files_done=self.files_done,
            files_total=self.files_total,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            rate_bytes_per_second=self.rate(now),
            eta_seconds=self.eta(now),
            elapsed_seconds=(now - self.started) if self.started else 0.0,
            staging_counts=dict(staging_counts),
            recent_errors=tuple(self.errors),
            error=self.error,
            import_report=self.import_report.to_dict() if self.import_report else None,
            worker_report=self.worker_report.to_dict() if self.worker_report else None,
            current_file=next(reversed(self.hashing.values()), None),
            files_scanned=self.files_scanned,
            scan_report=self.scan_report.to_dict() if self.scan_report else None,
            stage=stage.value if stage is not None else None,
            fraction=1.0 if state is MigrationState.DONE else self.fraction(),
            progress_by="files" if self.by_files else "bytes",
            files_unsized=self.files_unsized,
            retry_files=self.retry_files if wait is not None else 0,
            retry_in_seconds=wait,
            waiting=waiting_words(self.retry_files, wait) if wait is not None else None,
        )

    def rate(self, now: float) -> float:
        """Bytes per second over the last ``RATE_WINDOW_SECONDS``, up to ``now``: it
        falls to 0 while nothing is read (paused, waiting)."""
        samples = self.samples
        while len(samples) > 1 and samples[1][0] <= now - RATE_WINDOW_SECONDS:
            samples.popleft()
        if not samples or now <= samples[0][0]:
            return 0.0
        return max(0.0, (samples[-1][1] - samples[0][1]) / (now - samples[0][0]))

    @property
    def remaining(self) -> bool:
        return self.files_done < self.files_total

    @property
    def by_files(self) -> bool:
        """Whether progress is counted in files: some sizes are unknown, or none is known."""
        return self.files_unsized > 0 or self.bytes_total <= 0

    def fraction(self) -> float | None:
        if not self.files_total:
            return None
        if not self.remaining:
            return 1.0
        if self.by_files:
            done = self.files_done / self.files_total
        else:
            done = self.bytes_done / self.bytes_total
        return min(max(done, 0.0), ALMOST_DONE)

    def retry_wait(self, now: float) -> float | None:
        """Seconds until a file waiting for a retry may be tried, while that is all there is."""
        if not self.retry_files or self.hashing:
            return None
        return max(0.0, self.retry_due - now)

    def eta(self, now: float) -> float | None:
        if not self.remaining:
            return 0.0 if self.files_total else None
        rate, left = self.rate(now), self._bytes_left()
        if rate <= 0 or left is None:
            return None
        return max(left / rate, MIN_ETA_SECONDS)

    def _bytes_left(self) -> float | None:
        """The bytes still to read; the files of no known size at the others' mean size."""
        left = float(max(0, self.bytes_total - self.bytes_done))
        if not self.files_unsized:
            return left
        sized = self.files_total - self.files_unsized
        if sized <= 0 or self.bytes_total <= 0:
            return None  # no size known to guess from
        return left + self.files_unsized * self.bytes_total / sized


def waiting_words(files: int, seconds: float) -> str:
    """``'waiting 30 s to retry 2 files'``."""
    return f"waiting {math.ceil(seconds)} s to retry {files} file{'' if files == 1 else 's'}"
