"""A migration's status tells the truth: never 100% or ETA 0:00 while work remains,
files counted where sizes are unknown, a retry back-off said to be a wait, and the
pause reported in whatever stage the run is in."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support import hashing_settled, legacy_with_files, wait_for, write_file

from modelvault import DatabaseManager
from modelvault.config import Settings
from modelvault.migration.manager import MigrationManager, MigrationState, MigrationStatus
from modelvault.queue import leases


@pytest.fixture
def manager(db: DatabaseManager) -> MigrationManager:
    return MigrationManager(db)


def assert_never_done_early(statuses: list[MigrationStatus]) -> None:
    """No status claims the end while a file remains."""
    for status in statuses:
        if status.files_done < status.files_total:
            assert status.fraction is None or status.fraction < 1, status
            assert status.eta_seconds is None or status.eta_seconds >= 1, status


def test_unknown_sizes_are_stat_ed_at_claim_and_progress_counts_files(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    size = 1 << 30  # sparse: cheap to make, long enough to pause within
    legacy, _ = legacy_with_files(tmp_path, 3, size=size, sparse=True, sized=False)
    seen: list[MigrationStatus] = []
    hashing = threading.Event()

    def watch(status: MigrationStatus) -> None:
        seen.append(status)
        if status.bytes_done > 0:
            hashing.set()

    manager.subscribe(watch)
    assert manager.start_full_migration(legacy, workers=1)
    assert hashing.wait(60), "hashing never started"
    manager.pause_processing()
    wait_for(lambda: hashing_settled(manager), "the worker to hold still")
    held = manager.status(refresh=False)
    # The pause lands within the first file, or (on a busy machine) a later one.
    claimed = 1 if held.current_file else 0
    assert (held.progress_by, held.files_total) == ("files", 3)
    assert held.files_done < 3
    # The file being hashed was stat-ed when claimed; the others are unsized.
    assert held.files_unsized == 3 - held.files_done - claimed
    assert held.bytes_total == (held.files_done + claimed) * size
    # By files: a file counts once done, however many of its bytes were read.
    assert held.fraction == held.files_done / 3
    manager.resume_processing()
    assert manager.wait(120)
    assert manager.flush(30)
    first = next(s for s in seen if s.files_total)
    assert (first.progress_by, first.files_unsized, first.bytes_total) == ("files", 3, 0)
    assert_never_done_early(seen)
    done = manager.status()
    assert done.state is MigrationState.DONE
    assert (done.fraction, done.progress_by, done.files_unsized) == (1.0, "bytes", 0)
    assert done.bytes_done == done.bytes_total == 3 * size


def put_in_back_off(db: DatabaseManager, path: Path, seconds: float) -> None:
    """A queued file whose last attempt failed: it waits ``seconds`` before the next."""
    write_file(path, 4096, 1)
    db.add_pending_import({"path": str(path), "size_bytes": 4096})
    (row,) = leases.claim_batch(db, "an-earlier-run", limit=1, lease_seconds=60)
    failed = leases.record_failure(
        db, "an-earlier-run", row, "OSError: I/O error", max_attempts=5, backoff_seconds=seconds
    )
    assert failed == "pending"


def test_a_retry_back_off_is_reported_as_a_wait(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    put_in_back_off(db, tmp_path / "later.safetensors", 4)
    seen: list[MigrationStatus] = []
    manager.subscribe(seen.append)
    assert manager.start_processing(workers=1)
    wait_for(lambda: any(s.waiting for s in seen), "a status saying the run waits", 30)
    waiting = next(s for s in seen if s.waiting)
    assert waiting.state is MigrationState.PROCESSING
    assert waiting.retry_files == 1
    assert waiting.retry_in_seconds is not None
    assert 0 < waiting.retry_in_seconds <= 4
    assert waiting.waiting is not None
    assert re.fullmatch(r"waiting [1-4] s to retry 1 file", waiting.waiting)
    assert waiting.to_dict()["waiting"] == waiting.waiting
    assert waiting.eta_seconds is None  # nothing read yet: no rate to tell
    assert manager.wait(60)
    assert manager.flush(30)
    assert_never_done_early(seen)
    done = manager.status()
    assert done.state is MigrationState.DONE
    assert (done.files_done, done.retry_files, done.retry_in_seconds, done.waiting) == (
        1,
        0,
        None,
        None,
    )


def test_the_pause_is_reported_during_the_import(db: DatabaseManager, tmp_path: Path) -> None:
    manager = MigrationManager(DatabaseManager(db.engine, settings=Settings(import_batch_size=5)))
    legacy, _ = legacy_with_files(tmp_path, 20)
    states: list[MigrationState] = []
    manager.subscribe(lambda s: states.append(s.state))
    manager.pause_processing()  # before the start: the run starts paused
    assert manager.start_full_migration(legacy)
    status = manager.status(refresh=False)
    assert (status.state, status.stage) == (MigrationState.PAUSED, "importing")
    wait_for(lambda: manager.status(refresh=False).rows_imported > 0, "the first batch")
    assert not manager.wait(0.5)  # held after it
    held = manager.status(refresh=False)
    assert (held.state, held.stage) == (MigrationState.PAUSED, "importing")
    assert 0 < held.rows_imported < held.rows_to_import == 20
    manager.resume_processing()
    assert manager.wait(60)
    assert manager.flush(30)
    # Progress is published too (the first batch's count, while paused): one entry per change.
    changes = [state for i, state in enumerate(states) if i == 0 or states[i - 1] is not state]
    assert changes[0] is MigrationState.PAUSED
    assert changes[1] is MigrationState.IMPORTING  # resumed where it was
    assert changes[-1] is MigrationState.DONE
    assert manager.status().stage is None  # not running any more


def test_a_scan_pauses_as_a_scan(manager: MigrationManager, tmp_path: Path) -> None:
    write_file(tmp_path / "models" / "loras" / "a.safetensors", 4096, 1)
    manager.pause_processing()
    assert manager.start_scan([tmp_path / "models"])
    status = manager.status(refresh=False)
    assert (status.state, status.stage) == (MigrationState.PAUSED, "scanning")
    manager.resume_processing()
    assert manager.wait(60)
    assert manager.status().state is MigrationState.DONE


def test_the_worker_command_says_at_once_that_it_waits_for_a_retry(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.sqlite3"
    db = DatabaseManager(catalog)
    db.init_db()
    put_in_back_off(db, tmp_path / "later.safetensors", 600)
    db.dispose()
    worker = subprocess.Popen(
        [sys.executable, "-m", "modelvault", "worker", "--db", str(catalog)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(worker.stderr or ()), daemon=True)
    reader.start()
    try:
        # Not a terminal: a plain line every 5 s, but one at once when the wait begins.
        wait_for(lambda: any("waiting" in line for line in lines), "a line saying it waits", 60)
    finally:
        worker.terminate()  # nothing is claimed while it waits: nothing is left behind
        worker.wait(60)
    reader.join(30)
    said = next(line for line in lines if "waiting" in line)
    assert re.search(
        r"^progress: 0%  0/1 files  .*ETA --:--  waiting \d{3} s to retry 1 file", said
    )
    assert not any("100%" in line for line in lines)
