"""Progress subscribers are isolated from each other: one that is slow, never returns,
flushes from inside its callback or raises anything at all delays nothing but itself,
and no delivery thread outlives its subscriber."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from support import Blocking, legacy_with_files, wait_for

from modelvault import DatabaseManager
from modelvault.errors import MigrationError
from modelvault.migration import subscribers as subscribers_module
from modelvault.migration.manager import MigrationManager, MigrationState, MigrationStatus
from modelvault.migration.subscribers import MAILBOX_SIZE, Subscribers

THREAD_PREFIX = "modelvault-subscriber-"


@pytest.fixture
def manager(db: DatabaseManager) -> MigrationManager:
    return MigrationManager(db)


def delivery_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)}


def statuses() -> Subscribers[tuple[str, int]]:
    """Subscribers of ``(kind, n)`` pairs, coalescing by kind, as the manager's by state."""
    return Subscribers(kind=lambda status: status[0])


def stuck_in(subs: Subscribers[tuple[str, int]], first: tuple[str, int]) -> Blocking:
    """A subscriber of ``subs`` stuck in its first call, given ``first``, until released."""
    blocking = Blocking()
    subs.subscribe(blocking)
    subs.post(first)
    assert blocking.called.wait(30)
    return blocking


class Recorder:
    """A subscriber that keeps what it is given and says when it saw ``until``."""

    def __init__(self, until: object = None) -> None:
        self.seen: list[object] = []
        self.until = until
        self.got_it = threading.Event()

    def __call__(self, status: object) -> None:
        self.seen.append(status)
        if status == self.until or getattr(status, "state", None) == self.until:
            self.got_it.set()


# -- the delivery on its own --------------------------------------------------


def test_posting_never_waits_and_a_blocked_subscriber_gets_the_latest() -> None:
    subs = statuses()
    other = Recorder(until=("done", 0))
    subs.subscribe(other)
    blocking = stuck_in(subs, ("importing", 0))
    try:
        for n in range(1, 2001):  # while one subscriber is stuck in its first call
            subs.post(("processing", n))
        subs.post(("done", 0))
        assert other.got_it.wait(30), "the other subscriber was held up"
        assert ("processing", 2000) in other.seen
        assert len(blocking.seen) == 1
        assert not subs.flush(0.1)  # the stuck one has not been given the newest
    finally:
        blocking.release.set()
    assert subs.flush(30)
    assert blocking.seen == [("importing", 0), ("processing", 2000), ("done", 0)]


def test_changes_of_kind_queue_up_to_the_mailbox_size() -> None:
    subs = statuses()
    blocking = stuck_in(subs, ("first", 0))
    try:
        for n in range(3 * MAILBOX_SIZE):
            subs.post((f"kind-{n}", n))
    finally:
        blocking.release.set()
    assert subs.flush(30)
    assert len(blocking.seen) == 1 + MAILBOX_SIZE
    assert blocking.seen[-1] == (f"kind-{3 * MAILBOX_SIZE - 1}", 3 * MAILBOX_SIZE - 1)


@pytest.mark.parametrize(
    "error", [SystemExit, KeyboardInterrupt, GeneratorExit, RuntimeError, MemoryError]
)
def test_whatever_a_callback_raises_is_logged_and_delivery_goes_on(
    error: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    subs = statuses()
    calls: list[tuple[str, int]] = []

    def raising(status: tuple[str, int]) -> None:
        calls.append(status)
        raise error("raised by the app's callback")

    other = Recorder(until=("done", 2))
    subs.subscribe(raising)
    subs.subscribe(other)
    for n, kind in enumerate(("importing", "processing", "done")):
        subs.post((kind, n))
        assert subs.flush(30)  # each is delivered before the next: none coalesces
    assert calls == [("importing", 0), ("processing", 1), ("done", 2)]
    assert other.seen == calls
    failures = [r for r in caplog.records if "progress subscriber" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.exc_info is not None and r.exc_info[0] is error for r in failures)


def test_flush_from_a_callback_raises_instead_of_deadlocking() -> None:
    subs = statuses()
    answers: list[str] = []

    def flushing(_: tuple[str, int]) -> None:
        try:
            subs.flush()  # no timeout: this waited for itself forever
            answers.append("returned")
        except MigrationError as exc:
            answers.append(str(exc))

    subs.subscribe(flushing)
    subs.post(("processing", 1))
    assert subs.flush(30), "the delivery is stuck"
    assert len(answers) == 1
    assert answers[0].startswith("flush() was called from a progress subscriber's callback")


def test_a_subscriber_stuck_for_long_is_named_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(subscribers_module, "SLOW_CALLBACK_SECONDS", 0.05)
    subs = statuses()
    blocking = stuck_in(subs, ("first", 0))
    try:
        wait_for(lambda: _posted_and_warned(subs, caplog), "a warning about the stuck subscriber")
        for n in range(10):
            subs.post(("more", n))
    finally:
        blocking.release.set()
    assert subs.flush(30)
    stuck = [r for r in caplog.records if "has not returned" in r.getMessage()]
    assert len(stuck) == 1
    assert stuck[0].levelno == logging.WARNING


def _posted_and_warned(
    subs: Subscribers[tuple[str, int]], caplog: pytest.LogCaptureFixture
) -> bool:
    subs.post(("more", -1))
    return any("has not returned" in r.getMessage() for r in caplog.records)


def test_threads_end_when_idle_unsubscribed_or_closed(caplog: pytest.LogCaptureFixture) -> None:
    before = delivery_threads()
    subs = statuses()
    quick = [Recorder() for _ in range(5)]
    removers = [subs.subscribe(q) for q in quick]
    subs.post(("processing", 1))
    assert subs.flush(30)
    wait_for(lambda: delivery_threads() <= before, "idle delivery threads to end")
    blocking = stuck_in(subs, ("processing", 2))
    wait_for(lambda: all(len(q.seen) == 2 for q in quick), "the others to get it")
    for remove in removers:
        remove()
    subs.post(("processing", 3))
    wait_for(lambda: len(delivery_threads() - before) == 1, "the removed ones' threads to end")
    assert all(q.seen == [("processing", 1), ("processing", 2)] for q in quick)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert subs.close(timeout=0.2) is False  # the blocked one is abandoned
    assert time.monotonic() - started < 10
    assert any("left to end when it does" in r.getMessage() for r in caplog.records)
    (abandoned,) = delivery_threads() - before
    assert abandoned.daemon
    blocking.release.set()
    wait_for(lambda: delivery_threads() <= before, "the abandoned thread to end")
    assert blocking.seen == [("processing", 2)]  # nothing after close


def test_close_delivers_what_is_queued_first() -> None:
    subs = statuses()
    slow_release = threading.Event()
    seen: list[tuple[str, int]] = []

    def slow(status: tuple[str, int]) -> None:
        seen.append(status)
        slow_release.wait(30)

    subs.subscribe(slow)
    subs.post(("processing", 1))
    wait_for(lambda: bool(seen), "the first delivery")
    subs.post(("done", 2))
    threading.Timer(0.2, slow_release.set).start()
    assert subs.close(timeout=30) is True
    assert seen == [("processing", 1), ("done", 2)]
    subs.post(("after", 3))  # closed: nobody is left to give it to
    assert subs.flush(1)
    assert seen == [("processing", 1), ("done", 2)]


# -- through the manager ----------------------------------------------------------


def test_a_blocked_subscriber_delays_no_other_subscriber(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 12, size=64 << 10)
    blocking = Blocking()
    other = Recorder(until=MigrationState.DONE)
    manager.subscribe(blocking)
    manager.subscribe(other)
    try:
        assert manager.start_full_migration(legacy, workers=2)
        assert blocking.called.wait(30)
        assert manager.wait(120)
        assert other.got_it.wait(30), "a blocked subscriber held up another one"
        assert len(blocking.seen) == 1  # still in its first call
        states = [s.state for s in other.seen if isinstance(s, MigrationStatus)]
        assert states[0] is MigrationState.IMPORTING
        assert MigrationState.PROCESSING in states
        last = other.seen[-1]
        assert isinstance(last, MigrationStatus)
        assert last.files_done == 12
    finally:
        blocking.release.set()
    assert manager.flush(30)
    assert blocking.seen[-1].state is MigrationState.DONE  # the latest, once it returned


def test_callbacks_that_raise_flush_or_unsubscribe_stop_no_delivery(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 3)
    errors: list[BaseException] = []
    once: list[MigrationStatus] = []

    def exits(_: MigrationStatus) -> None:
        raise SystemExit(3)

    def flushes(_: MigrationStatus) -> None:
        try:
            manager.flush()
        except MigrationError as exc:
            errors.append(exc)

    def unsubscribes(status: MigrationStatus) -> None:
        once.append(status)
        remove()

    manager.subscribe(exits)
    manager.subscribe(flushes)
    remove = manager.subscribe(unsubscribes)
    other = Recorder(until=MigrationState.DONE)
    manager.subscribe(other)
    assert manager.start_full_migration(legacy)
    assert manager.wait(60)
    assert manager.flush(30)
    assert other.got_it.is_set()
    assert manager.status().state is MigrationState.DONE
    assert errors
    assert all(isinstance(e, MigrationError) for e in errors)
    assert len(once) == 1


def test_closing_the_manager_stops_the_run_and_ends_every_thread(
    manager: MigrationManager, db: DatabaseManager, tmp_path: Path
) -> None:
    legacy, _ = legacy_with_files(tmp_path, 4, size=256 << 20, sparse=True)
    before = delivery_threads()
    started = threading.Event()
    last = Recorder()
    manager.subscribe(lambda s: started.set() if s.bytes_done > 0 else None)
    manager.subscribe(last)
    assert manager.start_full_migration(legacy, workers=1)
    assert started.wait(60)
    with manager:
        pass  # leaving the block closes it
    assert not manager.running
    assert db.staging_counts()["claimed"] == 0  # the files in progress went back
    final = last.seen[-1]
    assert isinstance(final, MigrationStatus)
    assert final.state is MigrationState.STOPPED  # delivered before the threads ended
    wait_for(lambda: delivery_threads() <= before, "the delivery threads to end")
