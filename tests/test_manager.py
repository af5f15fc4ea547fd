"""MigrationManager: both stages in the background, controlled from another thread."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from support import Blocking, hashing_settled, in_time, legacy_with_files, wait_for

from modelvault import DatabaseManager
from modelvault.migration.manager import (
    MigrationManager,
    MigrationState,
    MigrationStatus,
    get_manager,
)
from modelvault.migration.subscribers import MAILBOX_SIZE


@pytest.fixture
def manager(db: DatabaseManager) -> MigrationManager:
    return MigrationManager(db)  # a fresh one per test, not the shared registry's


def test_full_migration_reports_states_and_progress(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, digests = legacy_with_files(tmp_path, 12, size=64 << 10, hashed=4, missing=1)
    seen: list[MigrationStatus] = []
    unsubscribe = manager.subscribe(seen.append)
    assert manager.start_full_migration(legacy, workers=2) is True
    assert manager.start_full_migration(legacy) is False  # one run at a time
    assert manager.wait(120)
    assert manager.flush(60)  # subscribers are called back from a thread of their own
    unsubscribe()
    status = manager.status()
    assert status.state is MigrationState.DONE
    assert status.import_report is not None
    assert status.import_report["imported"] == 4
    assert status.worker_report is not None
    assert status.worker_report["imported"] == 7
    assert status.worker_report["missing"] == 1
    assert status.files_done == status.files_total == 8
    assert status.bytes_done == 7 * (64 << 10)
    assert status.staging_counts["missing"] == 1
    assert status.staging_counts["pending"] == status.staging_counts["claimed"] == 0
    assert "not found" in status.recent_errors[-1]
    states = [s.state for s in seen]
    assert states[0] is MigrationState.IMPORTING
    assert MigrationState.PROCESSING in states
    assert states[-1] is MigrationState.DONE
    json.dumps(status.to_dict())  # fit for an app's JSON API
    assert db.count_models() == 11
    assert set(digests.values()) >= {m.sha256 for m in db.get_models_by_tag("lora")}


def test_pause_holds_the_hash_and_resume_finishes_without_rereading(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    size = 512 << 20
    legacy, digests = legacy_with_files(tmp_path, 2, size=size, sparse=True)
    started = threading.Event()
    manager.subscribe(lambda s: started.set() if s.bytes_done > 0 else None)
    manager.start_full_migration(legacy, workers=1)
    assert started.wait(60), "hashing never started"
    manager.pause_processing()
    assert manager.status().state is MigrationState.PAUSED
    # Paused: the byte count settles and stays below the total while we look.
    wait_for(lambda: hashing_settled(manager), "the workers to hold still")
    held = manager.status(refresh=False).bytes_done
    assert 0 < held < 2 * size
    assert manager.status(refresh=False).current_file in {str(p) for p in digests}
    assert not manager.wait(0.3)
    assert manager.status(refresh=False).bytes_done == held
    manager.resume_processing()
    assert manager.wait(120)
    status = manager.status()
    assert status.state is MigrationState.DONE
    assert status.bytes_done == 2 * size  # nothing was read twice
    assert status.current_file is None  # nothing is being hashed any more
    assert status.worker_report is not None
    assert status.worker_report["bytes_hashed"] == 2 * size


def test_stop_hands_rows_back_and_processing_continues_later(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 6, size=256 << 20, sparse=True)
    started = threading.Event()
    manager.subscribe(lambda s: started.set() if s.bytes_done > 0 else None)
    manager.start_full_migration(legacy, workers=1)
    assert started.wait(60)
    manager.stop()
    assert manager.wait(60)
    assert manager.status().state is MigrationState.STOPPED
    counts = db.staging_counts()
    assert counts["claimed"] == 0
    assert counts["pending"] >= 1
    assert manager.start_processing(workers=2) is True
    assert manager.wait(120)
    assert manager.status().state is MigrationState.DONE
    assert db.count_models() == 6


def test_a_bad_legacy_file_fails_the_run_with_its_reason(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    manager.start_full_migration(tmp_path / "absent.sqlite3")
    assert manager.wait(60)
    status = manager.status()
    assert status.state is MigrationState.FAILED
    assert status.error is not None
    assert "absent.sqlite3" in status.error
    assert not manager.running


def test_a_failing_subscriber_does_not_stop_the_migration(
    manager: MigrationManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 3)

    def broken(_: MigrationStatus) -> None:
        raise RuntimeError("ui crashed")

    manager.subscribe(broken)
    manager.start_full_migration(legacy)
    assert manager.wait(60)
    assert manager.status().state is MigrationState.DONE


def test_one_manager_per_catalog(
    db: DatabaseManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert MigrationManager.for_database(db) is MigrationManager.for_database(
        DatabaseManager(db.engine)
    )
    monkeypatch.setenv("MODELVAULT_DB_PATH", str(tmp_path / "default.sqlite3"))
    assert get_manager() is get_manager()
    assert get_manager().status(refresh=False).state is MigrationState.IDLE


def test_a_subscriber_that_blocks_stalls_nothing(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 12, size=64 << 10)
    blocking = Blocking()
    manager.subscribe(blocking)
    try:
        in_time(lambda: manager.start_full_migration(legacy, workers=2), "start to return")
        assert blocking.called.wait(30)
        in_time(manager.pause_processing, "pause to return")
        in_time(manager.resume_processing, "resume to return")
        assert manager.wait(60)  # the whole migration ran while the subscriber was stuck
        assert manager.status().state is MigrationState.DONE
        assert db.count_models() == 12
        assert len(blocking.seen) == 1
        assert not manager.flush(0.1)  # the delivery thread is still stuck in the callback
    finally:
        blocking.release.set()
    assert manager.flush(30)
    # What piled up meanwhile was coalesced: a few states, the latest one last.
    assert 2 <= len(blocking.seen) <= MAILBOX_SIZE + 1
    assert blocking.seen[-1].state is MigrationState.DONE
    assert blocking.seen[-1].files_done == 12
    assert len(blocking.threads) == 1
    assert blocking.threads.pop().startswith("modelvault-subscriber-")


def test_stop_and_wait_work_while_a_subscriber_blocks_forever(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 4, size=256 << 20, sparse=True)
    blocking = Blocking()
    manager.subscribe(blocking)
    try:
        manager.start_full_migration(legacy, workers=1)
        assert blocking.called.wait(30)
        in_time(manager.stop, "stop to return")
        assert manager.wait(60)
        assert manager.status().state in (MigrationState.STOPPED, MigrationState.DONE)
        assert db.staging_counts()["claimed"] == 0
    finally:
        blocking.release.set()
    assert manager.flush(30)


def test_a_subscriber_may_call_the_manager(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 3)
    states: list[MigrationState] = []

    def reentrant(status: MigrationStatus) -> None:
        states.append(manager.status(refresh=False).state)
        if status.state is MigrationState.PROCESSING:
            manager.pause_processing()
            manager.resume_processing()

    manager.subscribe(reentrant)
    manager.start_full_migration(legacy)
    assert manager.wait(60)
    assert manager.flush(30)
    assert manager.status().state is MigrationState.DONE
    assert states[-1] is MigrationState.DONE
