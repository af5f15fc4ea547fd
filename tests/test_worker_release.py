"""A worker that ends on an error hands every row back; rows of a dead worker are taken over.

Real failures at the real boundary: a SQLite catalog locked by another
connection past the busy timeout, a PostgreSQL backend terminated while it
waits for a lock, a worker process killed with SIGKILL. Leases are an hour
long throughout, so a row that comes back soon came back because it was
handed back or its owner was known dead, never because its lease ran out.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from support import wait_for
from support.postgres import reset_postgres
from support.worker import Child, MidHash, make_file, run_with_deadline, stage, staging

from modelvault import DatabaseManager, Settings
from modelvault.db.models import PendingImport
from modelvault.db.types import utcnow
from modelvault.migration import worker, worker_leases
from modelvault.migration.worker import MigrationWorker, process_pending
from modelvault.queue import owner

ROWS = 5
SETTINGS = Settings(
    lease_seconds=3600,
    hash_chunk_bytes=4096,
    retry_backoff_seconds=0,
    sqlite_busy_timeout_seconds=0.2,
)
DEADLINE = 60.0


def stage_files(db: DatabaseManager, folder: Path) -> dict[str, str]:
    """ROWS staged files of 64 KiB; returns {path: sha256}."""
    digests = {}
    for i in range(ROWS):
        path, sha = make_file(folder, f"model_{i}.safetensors", bytes([i]) * 64 * 1024)
        stage(db, path, size_bytes=64 * 1024)  # a known size: one claim takes them all
        digests[path] = sha
    return digests


def all_back_in_the_queue(db: DatabaseManager, paths: Iterator[str] | list[str]) -> None:
    rows = staging(db)
    for path in paths:
        row = rows[path]
        assert (row.status, row.claimed_by, row.lease_expires_at) == ("pending", None, None)
        assert row.attempts == 0  # handed back untouched: a catalog failure is no attempt


def start_worker(db: DatabaseManager, on_mid_hash: Callable[[], object]) -> MigrationWorker:
    events = MidHash(on_mid_hash)
    runner = MigrationWorker(db, settings=SETTINGS, on_event=events)
    runner.events = events  # type: ignore[attr-defined]
    runner.start()
    return runner


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[tuple[DatabaseManager, Path]]:
    path = tmp_path / "catalog.sqlite3"
    db = DatabaseManager(path, settings=SETTINGS)
    db.init_db()
    yield db, path
    db.dispose()


def test_a_catalog_locked_mid_run_gets_every_row_back(
    sqlite_db: tuple[DatabaseManager, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelvault.migration.worker")
    db, path = sqlite_db
    digests = stage_files(db, tmp_path / "files")
    # Another program takes the write lock while a file is hashed, past the busy timeout.
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    runner = start_worker(db, lambda: locker.execute("BEGIN EXCLUSIVE"))

    wait_for(
        lambda: any("trying again" in r.getMessage() for r in caplog.records),
        "the worker to fail on the lock, and to fail handing its rows back once",
        DEADLINE,
    )
    locker.execute("ROLLBACK")  # the catalog is back while the worker hands its rows back
    assert runner.wait(DEADLINE)
    locker.close()

    assert "database is locked" in str(runner.error)
    all_back_in_the_queue(db, list(digests))
    report = runner.report
    assert (report.released, report.abandoned, report.finished, report.retried) == (ROWS, 0, 0, 0)
    assert len(runner.events.of("released")) == ROWS  # type: ignore[attr-defined]


def test_rows_left_claimed_by_a_failed_worker_are_taken_over_at_once(
    sqlite_db: tuple[DatabaseManager, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, path = sqlite_db
    monkeypatch.setattr(worker_leases, "RELEASE_PATIENCE_SECONDS", 0.5)
    digests = stage_files(db, tmp_path / "files")
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    runner = start_worker(db, lambda: locker.execute("BEGIN EXCLUSIVE"))

    assert runner.wait(DEADLINE)  # the lock outlasts every try to hand the rows back
    locker.execute("ROLLBACK")
    locker.close()

    assert (runner.report.abandoned, runner.report.released) == (ROWS, 0)
    assert len(runner.events.of("abandoned")) == ROWS  # type: ignore[attr-defined]
    assert {row.claimed_by for row in staging(db).values()} == {runner.owner}
    # Its worker has ended: the next run takes the rows over without waiting an hour.
    report = run_with_deadline(lambda: process_pending(db, settings=SETTINGS))
    assert (report.imported, report.released, report.abandoned) == (ROWS, 0, 0)
    assert all(db.get_model(sha) is not None for sha in digests.values())


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    """An empty PostgreSQL catalog (skips when no server is configured)."""
    reset_postgres(postgres_database)
    return postgres_database


def test_a_postgresql_pool_whose_backends_are_killed_hands_every_row_back(
    pg_url: str, tmp_path: Path
) -> None:
    db_url = pg_url
    db = DatabaseManager(db_url, settings=SETTINGS)
    db.init_db()
    digests = stage_files(db, tmp_path / "files")
    engine = create_engine(db_url)
    admin = engine.connect()

    def lock_models() -> None:  # the workers' commits will wait for this lock
        admin.execute(text("LOCK TABLE models IN ACCESS EXCLUSIVE MODE"))

    settings = Settings(lease_seconds=3600, hash_chunk_bytes=4096, worker_batch_size=2)
    events = MidHash(lock_models)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            process_pending(db, workers=2, settings=settings, on_event=events)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    pool = threading.Thread(target=run, daemon=True)
    pool.start()
    waiting = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND pid <> pg_backend_pid()"
    )

    def kill_waiting_backends() -> bool:
        with engine.connect() as killer:
            killer.execute(waiting)
        return not pool.is_alive()

    wait_for(kill_waiting_backends, "the pool to end", DEADLINE)
    admin.rollback()
    admin.close()
    engine.dispose()

    assert "a worker stopped on an error" in str(errors[0])
    rows = staging(db)
    imported = {path for path, sha in digests.items() if db.get_model(sha) is not None}
    assert set(rows) == set(digests) - imported
    all_back_in_the_queue(db, list(rows))
    assert len(rows) >= 1  # the lock caught at least the file being hashed
    db.dispose()


KILLED_CHILD = r"""
import sys, threading
from modelvault import DatabaseManager, Settings
from modelvault.migration.worker import process_pending

url = sys.argv[1]
settings = Settings(lease_seconds=3600, hash_chunk_bytes=4096)
db = DatabaseManager(url, settings=settings)
never = threading.Event()

def on_event(e):
    if e.kind == "progress":
        print("hashing", flush=True)
        never.wait()  # holds its rows until it is killed

process_pending(db, workers=1, on_event=on_event)
"""


def test_rows_of_a_killed_worker_process_are_taken_over_without_waiting_for_the_lease(
    db: DatabaseManager, db_url: str, tmp_path: Path
) -> None:
    digests = stage_files(db, tmp_path / "files")
    script = tmp_path / "killed_child.py"
    script.write_text(KILLED_CHILD)
    child = Child(script, db_url, tmp_path / "unused.log")
    assert child.next_line() == "hashing"
    with db.session_scope() as s:
        owners = set(s.scalars(select(PendingImport.claimed_by)))
    assert len(owners) == 1
    (held_by,) = owners
    assert held_by is not None
    assert held_by.split(":")[1] == str(child.proc.pid)
    child.proc.kill()  # SIGKILL: no chance to hand anything back
    child.proc.wait(DEADLINE)

    report = run_with_deadline(lambda: process_pending(db, settings=SETTINGS))

    assert (report.imported, report.released, report.abandoned) == (ROWS, 0, 0)
    assert all(db.get_model(sha) is not None for sha in digests.values())
    assert staging(db) == {}


def owner_of_an_exited_process() -> str:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from modelvault.queue.owner import new_owner; print(new_owner('w'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    ).stdout.strip()


def test_only_provably_dead_owners_are_dead(tmp_path: Path) -> None:
    mine = owner.new_owner("modelvault-worker-1")
    owner.running(mine)
    assert not owner.provably_dead(mine)  # a worker of ours that still runs
    owner.stopped(mine)
    assert owner.provably_dead(mine)  # one that has ended

    gone = owner_of_an_exited_process()
    assert gone.split(":")[0] == mine.split(":")[0]
    assert owner.provably_dead(gone)  # that process has exited

    host, pid, rest = mine.split(":", 2)
    assert not owner.provably_dead(f"another-host:{pid}:{rest}")
    assert not owner.provably_dead(f"{host}:{pid}:modelvault-worker-1:0123456789ab")  # old form
    assert not owner.provably_dead("dead-worker")
    assert len(owner.new_owner("x" * 300)) <= 200


def test_a_running_worker_takes_over_rows_of_a_worker_that_died_meanwhile(
    db: DatabaseManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "ORPHAN_CHECK_SECONDS", 0.1)
    runner = MigrationWorker(db, settings=SETTINGS, exit_when_idle=False)
    runner.start()
    path, sha = make_file(tmp_path, "orphan.safetensors", b"o" * 5000)
    with db.session_scope() as s:  # claimed for another hour by a process that has exited
        s.add(
            PendingImport(
                path=path,
                name="orphan",
                status="claimed",
                claimed_by=owner_of_an_exited_process(),
                lease_expires_at=utcnow() + timedelta(hours=1),
            )
        )
    try:
        wait_for(lambda: db.get_model(sha) is not None, "the orphan to be taken over", DEADLINE)
    finally:
        runner.stop()
        assert runner.wait(DEADLINE)
    assert (runner.report.imported, runner.report.released) == (1, 0)
