"""The pool sizes itself to the work: one worker on small files, all of them on big ones.

Real catalogs and real files. Which worker did what is read from the events;
where two workers must be busy at once, the first one waits in its event
callback for the second (with a deadline), so the test fails if the second
never starts instead of depending on timing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.worker import Events, make_file, stage

from modelvault import DatabaseManager, Settings
from modelvault.migration import worker
from modelvault.migration.worker import WorkerEvent, process_pending
from modelvault.queue import leases

FAST = Settings(retry_backoff_seconds=0, lease_seconds=30, max_attempts=3)
DEADLINE_SECONDS = 30.0
# What counts as heavy, lowered so that the tests write small files.
HEAVY = 1024 * 1024


@pytest.fixture(autouse=True)
def _small_heavy_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "LIGHT_BATCH_BYTES", HEAVY)


def test_a_pool_leaves_small_files_to_one_worker(db: DatabaseManager, tmp_path: Path) -> None:
    for i in range(200):
        path, _ = make_file(tmp_path, f"{i}.bin", b"small file %d" % i)
        stage(db, path, size_bytes=len(b"small file %d" % i))
    events = Events()
    threads_seen: set[str] = set()

    def on_event(event: WorkerEvent) -> None:
        threads_seen.update(t.name for t in threading.enumerate())
        events(event)

    report = process_pending(db, workers=3, settings=FAST, on_event=on_event)

    assert report.imported == 200
    assert report.workers == 3
    # Several batches (32 rows each), all claimed by whichever worker took the lane.
    assert len({e.worker for e in events.of("claimed")}) == 1
    assert len({e.worker for e in events.of("finished")}) == 1
    # The others were held back: on small files they would only cost their start.
    pool_threads = {name for name in threads_seen if name.startswith("modelvault-worker-")}
    assert pool_threads == {"modelvault-worker-1"}


def test_a_pool_hashes_heavy_files_in_parallel(db: DatabaseManager, tmp_path: Path) -> None:
    size = HEAVY + 1
    for i in range(2):
        path, _ = make_file(tmp_path, f"big{i}.bin", bytes([i]) * size)
        stage(db, path, size_bytes=size)
    both_busy = threading.Event()
    claimers: set[str] = set()
    lock = threading.Lock()

    def on_event(event: WorkerEvent) -> None:
        if event.kind != "claimed":
            return
        with lock:
            claimers.add(event.worker)
            if len(claimers) == 2:
                both_busy.set()
        # The first worker holds its file until a second worker has claimed the other.
        both_busy.wait(DEADLINE_SECONDS)

    settings = Settings(retry_backoff_seconds=0, lease_seconds=60, worker_batch_size=1)
    report = process_pending(db, workers=2, settings=settings, on_event=on_event)

    assert report.imported == 2
    assert both_busy.is_set(), "the second worker never took the second big file"


def test_outside_the_lane_only_heavy_batches_are_claimed(
    db: DatabaseManager, tmp_path: Path
) -> None:
    stage(db, str(tmp_path / "small.bin"), size_bytes=10)
    stage(db, str(tmp_path / "big.bin"), size_bytes=HEAVY)
    heavy = HEAVY
    # The oldest rows add up to less than asked for: nothing is claimed.
    assert leases.claim_batch(db, "helper", limit=1, lease_seconds=60, min_bytes=heavy) == []
    (small,) = leases.claim_batch(db, "lane", limit=1, lease_seconds=60)
    (big,) = leases.claim_batch(db, "helper", limit=1, lease_seconds=60, min_bytes=heavy)

    assert (Path(small.path).name, Path(big.path).name) == ("small.bin", "big.bin")
    assert leases.batch_bytes([small, big]) == 10 + HEAVY


def test_within_budget_takes_nothing_below_the_minimum() -> None:
    assert leases.within_budget([(1, 4), (2, 4)], 10, min_bytes=9) == []
    assert leases.within_budget([(1, 4), (2, 5)], 10, min_bytes=9) == [1, 2]
    assert leases.within_budget([(1, None)], 10, min_bytes=9) == [1]  # unknown: a full budget


def test_small_files_go_on_while_a_big_one_is_hashed(db: DatabaseManager, tmp_path: Path) -> None:
    size = HEAVY + 1
    big, _ = make_file(tmp_path, "big.bin", b"b" * size)
    stage(db, big, size_bytes=size)
    for i in range(100):
        path, _ = make_file(tmp_path, f"{i}.bin", b"small %d" % i)
        stage(db, path, size_bytes=len(b"small %d" % i))
    small_done = threading.Event()
    big_worker: list[str] = []

    def on_event(event: WorkerEvent) -> None:
        if event.kind == "claimed" and event.path == big:
            big_worker.append(event.worker)
            # Hold the big file until another worker has finished a small one.
            small_done.wait(DEADLINE_SECONDS)
        elif event.kind == "finished" and big_worker and event.worker != big_worker[0]:
            small_done.set()

    report = process_pending(db, workers=2, settings=FAST, on_event=on_event)

    assert report.imported == 101
    assert small_done.is_set(), "no small file was finished while the big one was hashed"


def test_postgresql_plans_every_run_for_the_table_as_it_is(db: DatabaseManager) -> None:
    """No generic plan made while the catalog was empty outlives its growth."""
    if db.is_sqlite:
        pytest.skip("SQLite has no plan cache of this kind")
    with db.engine.connect() as conn:
        # Never prepared on the server: PostgreSQL plans each run for the tables as they are.
        assert conn.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
        for _ in range(10):  # psycopg's default prepares at the fifth run
            conn.exec_driver_sql("SELECT count(*) FROM models WHERE sha256 = %(sha)s", {"sha": "0"})
        prepared = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
        assert prepared == 0
        # The foreign key checks keep their cached plans: not forced to plan every row.
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "auto"


def test_the_connection_used_last_is_taken_first(db: DatabaseManager) -> None:
    """A lone busy worker keeps one warm connection instead of rotating through the pool."""
    with db.engine.connect() as first, db.engine.connect() as second:
        first_raw = first.connection.dbapi_connection
        second_raw = second.connection.dbapi_connection
        first.close()  # returned first...
    # ...second returned last (leaving the with block): it is the one handed out next.
    with db.engine.connect() as again:
        assert again.connection.dbapi_connection is second_raw
        assert again.connection.dbapi_connection is not first_raw
