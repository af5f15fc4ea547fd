"""Pause, resume and stop of the worker pool, and leases held or lost meanwhile.

To pause or stop in the middle of a file for certain (not by luck of timing),
the test acts from the worker's own progress callback, right after the first
chunk of the file: what is measured then is how fast the worker obeys.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from modelvault import DatabaseManager, Settings
from modelvault.db.models import PendingImport
from modelvault.db.types import utcnow
from modelvault.hashing import HashControl
from modelvault.migration.worker import MigrationWorker, WorkerEvent, WorkerReport, process_pending
from modelvault.queue import leases

MIB = 1024 * 1024
PAUSE_CONTRACT_SECONDS = 0.5


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """A 1 GiB file (sparse, with random bytes at both ends): path, SHA-256, size."""
    path = tmp_path_factory.mktemp("big") / "checkpoint.safetensors"
    size = 1024 * MIB
    head, tail = os.urandom(MIB), os.urandom(MIB)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(size - MIB)
        f.write(tail)
    sha = hashlib.sha256(head)
    zeros = bytes(8 * MIB)
    for _ in range((size - 2 * MIB) // len(zeros)):
        sha.update(zeros)
    sha.update(zeros[: (size - 2 * MIB) % len(zeros)])
    sha.update(tail)
    return str(path), sha.hexdigest(), size


class Timeline:
    """Events with the moment they arrived; ``hook`` runs in the worker thread."""

    def __init__(self, hook: Callable[[WorkerEvent], None] | None = None) -> None:
        self.items: list[tuple[float, WorkerEvent]] = []
        self.hook = hook
        self.arrived: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def __call__(self, event: WorkerEvent) -> None:
        with self._lock:
            self.items.append((time.monotonic(), event))
            self.arrived.setdefault(event.kind, threading.Event()).set()
        if self.hook is not None:
            self.hook(event)

    def wait_for(self, kind: str, timeout: float = 15.0) -> float:
        """Wait until an event of ``kind`` arrived; returns when the first one did."""
        with self._lock:
            flag = self.arrived.setdefault(kind, threading.Event())
        assert flag.wait(timeout), f"no {kind!r} event within {timeout} s"
        return self.times(kind)[0]

    def times(self, kind: str) -> list[float]:
        return [t for t, e in self.items if e.kind == kind]

    def of(self, kind: str) -> list[WorkerEvent]:
        return [e for _, e in self.items if e.kind == kind]


class Pool:
    """process_pending in a background thread, so the test can steer it."""

    def __init__(self, db: DatabaseManager, **kwargs: Any) -> None:
        self.report: WorkerReport | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(db, kwargs), daemon=True)
        self.thread.start()

    def _run(self, db: DatabaseManager, kwargs: dict[str, Any]) -> None:
        try:
            self.report = process_pending(db, **kwargs)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float = 60.0) -> WorkerReport:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the pool did not end"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def row_of(db: DatabaseManager, path: str) -> PendingImport:
    with db.session_scope() as s:
        row = s.scalar(select(PendingImport).where(PendingImport.path == path))
        assert row is not None
        return row


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        tick.wait(0.05)


def test_pause_mid_file_holds_the_lease_and_resume_reads_no_byte_twice(
    db: DatabaseManager, big_file: tuple[str, str, int]
) -> None:
    path, sha, size = big_file
    db.add_pending_import({"path": path, "size_bytes": size})
    control = HashControl()
    paused_at: list[float] = []

    def pause_after_first_chunk(event: WorkerEvent) -> None:
        if event.kind == "progress" and not paused_at:
            paused_at.append(time.monotonic())
            control.pause()

    timeline = Timeline(pause_after_first_chunk)
    settings = Settings(lease_seconds=1, hash_chunk_bytes=MIB)
    pool = Pool(db, workers=1, settings=settings, control=control, on_event=timeline)
    try:
        paused_seen = timeline.wait_for("paused")
        assert paused_seen - paused_at[0] <= PAUSE_CONTRACT_SECONDS
        assert max(timeline.times("progress")) - paused_at[0] <= PAUSE_CONTRACT_SECONDS
        hashed_before = sum(e.bytes for e in timeline.of("progress"))
        assert 0 < hashed_before < size  # really in the middle of the file
        (paused,) = timeline.of("paused")
        assert (paused.path, paused.bytes) == (path, hashed_before)

        # Paused for longer than a whole lease: the worker keeps renewing it.
        first = row_of(db, path)
        assert first.lease_expires_at is not None
        wait_until(lambda: utcnow() > first.lease_expires_at + timedelta(seconds=0.3))  # type: ignore[operator]
        held = row_of(db, path)
        assert (held.status, held.claimed_by) == ("claimed", first.claimed_by)
        assert held.lease_expires_at is not None
        assert held.lease_expires_at > utcnow()
        assert max(timeline.times("progress")) < paused_seen  # nothing hashed while paused
    finally:
        control.resume()
    report = pool.result()

    assert sum(e.bytes for e in timeline.of("progress")) == size
    assert (report.imported, report.files_hashed, report.bytes_hashed) == (1, 1, size)
    assert len(timeline.of("claimed")) == 1  # the same hash went on, nothing started over
    model = db.get_model(sha)
    assert model is not None
    assert model.path == path


def test_stop_mid_file_hands_every_held_row_back(db: DatabaseManager, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.safetensors"
        path.write_bytes(os.urandom(4 * MIB))
        paths.append(str(path))
        db.add_pending_import({"path": str(path), "size_bytes": 4 * MIB, "tags": ["t"]})
    control = HashControl()

    def stop_after_first_chunk(event: WorkerEvent) -> None:
        if event.kind == "progress":
            control.stop()

    timeline = Timeline(stop_after_first_chunk)
    settings = Settings(hash_chunk_bytes=MIB)
    report = process_pending(db, workers=1, settings=settings, control=control, on_event=timeline)

    for path in paths:
        row = row_of(db, path)
        assert (row.status, row.claimed_by, row.lease_expires_at, row.attempts) == (
            "pending",
            None,
            None,
            0,
        )
    released = timeline.of("released")
    assert sorted(e.path for e in released) == paths
    assert {e.message for e in released} == {"stopped"}
    assert [e.bytes > 0 for e in released] == [True, False, False]  # the one mid-hash
    assert (report.released, report.imported, db.count_models()) == (3, 0, 0)

    again = process_pending(db, workers=1, settings=settings)  # a new run picks them up
    assert again.imported == 3


@pytest.mark.parametrize("how", ["stop_event", "control"])
def test_a_paused_worker_stops_promptly_and_releases_its_row(
    db: DatabaseManager, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(os.urandom(8 * MIB))
    db.add_pending_import({"path": str(path), "size_bytes": 8 * MIB})
    control = HashControl()

    def pause_after_first_chunk(event: WorkerEvent) -> None:
        if event.kind == "progress":
            control.pause()

    timeline = Timeline(pause_after_first_chunk)
    worker = MigrationWorker(
        db, settings=Settings(hash_chunk_bytes=MIB), control=control, on_event=timeline
    )
    worker.start()
    timeline.wait_for("paused")
    if how == "stop_event":
        worker.stop()
    else:
        control.stop()
    worker.join(2.0)

    assert not worker.is_alive()
    assert worker.error is None
    row = row_of(db, str(path))
    assert (row.status, row.claimed_by, row.attempts) == ("pending", None, 0)
    assert [e.message for e in timeline.of("released")] == ["stopped"]


def test_a_pool_paused_before_it_starts_claims_nothing_until_resumed(
    db: DatabaseManager, tmp_path: Path
) -> None:
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(bytes([i]) * 1000)
        paths.append(str(path))
        db.add_pending_import({"path": str(path), "size_bytes": 1000})
    control = HashControl()
    control.pause()
    timeline = Timeline()
    pool = Pool(db, workers=2, control=control, on_event=timeline)
    try:
        timeline.wait_for("paused")
        assert {e.path for e in timeline.of("paused")} == {""}  # between files
        assert timeline.of("claimed") == []
        assert {row_of(db, p).status for p in paths} == {"pending"}
    finally:
        control.resume()
    report = pool.result()
    assert report.imported == 4


def test_a_worker_that_loses_its_lease_mid_file_lets_the_row_go(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = tmp_path / "m.bin"
    data = os.urandom(16 * MIB)
    path.write_bytes(data)
    db.add_pending_import({"path": str(path), "size_bytes": len(data)})
    control = HashControl()
    paused_once: list[bool] = []

    def pause_after_first_chunk(event: WorkerEvent) -> None:
        if event.kind == "progress" and not paused_once:
            paused_once.append(True)
            control.pause()

    timeline = Timeline(pause_after_first_chunk)
    settings = Settings(lease_seconds=1, hash_chunk_bytes=MIB)
    pool = Pool(db, workers=1, settings=settings, control=control, on_event=timeline)
    try:
        timeline.wait_for("paused")
        with db.session_scope() as s:  # the worker stalled past its lease...
            s.execute(
                update(PendingImport).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        (taken,) = leases.claim_batch(db, "thief", limit=1, lease_seconds=60)  # ...and lost it
        timeline.wait_for("released")
        (released,) = timeline.of("released")
        assert released.message is not None
        assert "lease lost" in released.message
        assert released.bytes == sum(e.bytes for e in timeline.of("progress"))
        assert row_of(db, str(path)).claimed_by == "thief"
        assert db.count_models() == 0
        assert leases.release(db, "thief", [taken.id]) == {taken.id}  # the thief gives it back
    finally:
        control.resume()
    report = pool.result()

    assert (report.imported, report.released, report.files_hashed) == (1, 1, 1)
    assert len(timeline.of("claimed")) == 2
    assert db.get_model(hashlib.sha256(data).hexdigest()) is not None


def test_a_pool_waiting_out_a_back_off_stops_at_once(db: DatabaseManager, tmp_path: Path) -> None:
    path = tmp_path / "growing.ckpt"
    path.write_bytes(b"x" * 64 * 1024)
    db.add_pending_import({"path": str(path)})

    def grow(event: WorkerEvent) -> None:  # the file changes under the first attempt
        if event.kind == "progress" and event.bytes and path.stat().st_size == 64 * 1024:
            with path.open("ab") as f:
                f.write(b"more")

    control = HashControl()
    timeline = Timeline(grow)
    settings = Settings(retry_backoff_seconds=600, max_attempts=3, hash_chunk_bytes=4096)
    pool = Pool(db, settings=settings, control=control, on_event=timeline)

    timeline.wait_for("error")  # the first attempt failed: ten minutes of back-off ahead
    control.stop()
    report = pool.result(timeout=5)

    assert (report.retried, report.failed) == (1, 0)
    row = row_of(db, str(path))
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.not_before is not None
    assert row.not_before > utcnow() + timedelta(seconds=500)


def test_a_worker_kept_alive_picks_up_rows_staged_later(
    db: DatabaseManager, tmp_path: Path
) -> None:
    timeline = Timeline()
    worker = MigrationWorker(db, on_event=timeline, exit_when_idle=False)
    worker.start()
    try:
        path = tmp_path / "late.bin"
        path.write_bytes(b"staged while the worker idles")
        db.add_pending_import({"path": str(path)})
        timeline.wait_for("finished")
    finally:
        worker.stop()
        worker.join(2.0)
    assert not worker.is_alive()
    assert worker.error is None
    assert worker.report.imported == 1
