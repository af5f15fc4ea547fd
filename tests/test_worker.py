"""Stage 2, the worker: every staged row reaches its final place, on every backend.

Real catalogs (SQLite file, PostgreSQL), real files under tmp_path. Time is
never faked: where a lease must have run out, the test says so by writing the
expiry into the row, as a stalled worker's clock would have it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from support import notes_of
from support.worker import Events, MidHash, make_file, stage, staging

from modelvault import (
    CatalogError,
    ConfigError,
    DatabaseManager,
    MigrationError,
    Settings,
    ValidationError,
)
from modelvault.catalog.settle import Outcome
from modelvault.catalog.stamp_meta import SCAN_MTIME_NS
from modelvault.db.models import Model, PendingImport, Tag, model_tags
from modelvault.db.types import utcnow
from modelvault.file_stamp import FILE_STAT, stamp_of, stat_marks
from modelvault.migration.worker import (
    WorkerEvent,
    WorkerReport,
    process_pending,
    retry_pending,
)
from modelvault.queue import finish, leases, overview
from modelvault.queue.finish import insert_models
from modelvault.queue.rows import TagCache
from modelvault.queue.statements import MODEL_COLUMNS, statements_for

FAST = Settings(retry_backoff_seconds=0, lease_seconds=30, max_attempts=3)


def marks_of(path: str) -> dict[str, int]:
    """What a model of the file at ``path`` keeps in ``meta["file_stat"]``."""
    return stat_marks(stamp_of(os.stat(path)))


def tags_of(db: DatabaseManager, sha: str) -> dict[str, str | None]:
    model = db.get_model(sha)
    assert model is not None, f"no model {sha}"
    return {t.name: t.color for t in model.tags}


def test_new_files_become_models_with_their_coloured_tags(
    db: DatabaseManager, tmp_path: Path
) -> None:
    a, sha_a = make_file(tmp_path, "loras/a.safetensors", b"a" * 10_000)
    b, sha_b = make_file(tmp_path, "ckpt/b.ckpt", b"b" * 3_000_000)
    stage(
        db,
        a,
        type="LoRA",
        base="SDXL",
        meta={"description": "my style"},
        tags=[{"name": "Style", "color": "RED"}, {"name": "fav", "color": None}],
        size_bytes=10_000,
    )
    stage(db, b, tags=[{"name": "style", "color": "#00ff00"}])
    events = Events()

    report = process_pending(db, settings=FAST, on_event=events, workers=1)  # in id order

    assert (report.imported, report.finished, report.files_hashed) == (2, 2, 2)
    assert report.bytes_hashed == 3_010_000
    model = db.get_model(sha_a)
    assert model is not None
    assert (model.path, model.name, model.type, model.base, model.size_bytes) == (
        a,
        "a.safetensors",
        "lora",
        "SDXL",
        10_000,
    )
    assert notes_of(model.meta) == {"description": "my style", FILE_STAT: marks_of(a)}
    assert "no format modelvault reads" in model.meta["identify"]["problem"]
    assert model.mtime_ns == Path(a).stat().st_mtime_ns
    # A tag that exists keeps its colour: the first row to create "style" set it.
    assert tags_of(db, sha_a) == {"style": "#ff0000", "fav": None}
    assert tags_of(db, sha_b) == {"style": "#ff0000"}
    assert staging(db) == {}
    finished = {e.path: e for e in events.of("finished")}
    assert finished[b].outcome == "imported"
    assert (finished[b].sha256, finished[b].bytes) == (sha_b, 3_000_000)
    assert sum(e.bytes for e in events.of("progress", b)) == 3_000_000
    assert [e.bytes for e in events.of("claimed", a)] == [10_000]
    assert report.to_dict()["imported"] == 2


def test_a_missing_file_keeps_its_row_tags_and_notes(db: DatabaseManager, tmp_path: Path) -> None:
    gone = str(tmp_path / "gone.safetensors")
    stage(db, gone, meta={"notes": "keep me"}, tags=[{"name": "red", "color": "red"}])
    events = Events()

    report = process_pending(db, settings=FAST, on_event=events)

    row = staging(db)[gone]
    assert (row.status, row.attempts, row.sha256) == ("missing", 1, None)
    assert row.last_error == f"file not found: {gone}"
    assert (row.meta, row.tags) == ({"notes": "keep me"}, [{"name": "red", "color": "#ff0000"}])
    assert (row.claimed_by, row.lease_expires_at) == (None, None)
    assert (report.missing, report.files_hashed) == (1, 0)
    assert [e.outcome for e in events.of("finished")] == ["missing"]
    assert db.count_models() == 0


def test_transient_errors_are_retried_with_back_off_then_fail(
    db: DatabaseManager, tmp_path: Path
) -> None:
    # A file that grows while every attempt reads it: a real error a retry might cure.
    path, _ = make_file(tmp_path, "growing.ckpt", b"x" * 64 * 1024)
    stage(db, path, tags=[{"name": "keep"}])
    events = Events()
    armed = threading.Event()

    def on_event(event: WorkerEvent) -> None:
        events(event)
        if event.kind == "claimed":
            armed.set()
        elif event.kind == "progress" and armed.is_set():
            armed.clear()
            with open(path, "ab") as f:  # written mid-attempt, from the worker's own thread
                f.write(b"more")

    settings = Settings(retry_backoff_seconds=0.2, max_attempts=3, hash_chunk_bytes=4096)
    report = process_pending(db, settings=settings, on_event=on_event)

    row = staging(db)[path]
    assert (row.status, row.attempts, row.not_before) == ("failed", 3, None)
    assert row.last_error is not None
    assert f"{path} changed while it was being hashed" in row.last_error
    assert row.tags == [{"name": "keep", "color": None}]
    assert (report.retried, report.failed, report.finished) == (2, 1, 1)
    assert [e.outcome for e in events.of("error")] == ["retried", "retried", "failed"]
    # The pool waited out both back-offs (0.2 s, then 0.4 s) instead of giving up.
    assert report.seconds >= 0.6


def test_back_off_doubles_with_each_attempt(db: DatabaseManager, tmp_path: Path) -> None:
    stage(db, str(tmp_path / "x"))
    (row,) = leases.claim_batch(db, "w1", limit=5, lease_seconds=60)
    before = utcnow()
    assert leases.record_failure(db, "w1", row, "boom", max_attempts=5, backoff_seconds=100) == (
        "pending"
    )
    first = staging(db)[row.path]
    assert first.not_before is not None
    assert timedelta(seconds=99) <= first.not_before - before <= timedelta(seconds=102)
    assert leases.claim_batch(db, "w1", limit=5, lease_seconds=60) == []  # still backing off
    wait = overview.queue_state(db).wait_seconds
    assert wait is not None
    assert 90 < wait <= 100
    _expire(db, not_before=True)  # the back-off has passed
    (again,) = leases.claim_batch(db, "w2", limit=5, lease_seconds=60)
    assert again.attempts == 1
    before = utcnow()
    leases.record_failure(db, "w2", again, "boom", max_attempts=5, backoff_seconds=100)
    second = staging(db)[row.path]
    assert second.not_before is not None
    assert timedelta(seconds=199) <= second.not_before - before <= timedelta(seconds=202)
    assert (second.attempts, second.last_error) == (2, "boom")


def test_content_at_another_live_path_is_a_duplicate(db: DatabaseManager, tmp_path: Path) -> None:
    original, sha = make_file(tmp_path, "a/model.safetensors", b"same bytes")
    copy, _ = make_file(tmp_path, "b/copy.safetensors", b"same bytes")
    db.upsert_model(
        {"sha256": sha, "path": original, "tags": [{"name": "mine", "color": "#111111"}]}
    )
    stage(
        db,
        copy,
        meta={"notes": "legacy notes"},
        tags=[{"name": "mine", "color": "#222222"}, {"name": "copied", "color": "blue"}],
    )

    report = process_pending(db, settings=FAST)

    row = staging(db)[copy]
    assert (row.status, row.sha256) == ("duplicate", sha)
    assert row.last_error == f"same content as {original}"
    # The file's mtime is kept for the next folder scan, which then leaves it alone.
    assert notes_of(row.meta) == {
        "notes": "legacy notes",
        SCAN_MTIME_NS: os.stat(copy).st_mtime_ns,
        FILE_STAT: marks_of(copy),
    }
    model = db.get_model(sha)
    assert model is not None
    assert model.path == original
    assert tags_of(db, sha) == {"mine": "#111111", "copied": "#0000ff"}
    assert (report.duplicate, report.files_hashed) == (1, 1)


def test_two_staged_copies_give_one_model_and_one_duplicate(
    db: DatabaseManager, tmp_path: Path
) -> None:
    first, sha = make_file(tmp_path, "one.bin", b"twin")
    second, _ = make_file(tmp_path, "two.bin", b"twin")
    stage(db, first, tags=[{"name": "a"}])
    stage(db, second, tags=[{"name": "b", "color": "#abcdef"}])

    report = process_pending(db, settings=FAST, workers=1)

    assert (report.imported, report.duplicate) == (1, 1)
    model = db.get_model(sha)
    assert model is not None
    assert model.path == first
    assert tags_of(db, sha) == {"a": None, "b": "#abcdef"}
    assert list(staging(db)) == [second]


def test_content_whose_catalogued_file_is_gone_moves_there(
    db: DatabaseManager, tmp_path: Path
) -> None:
    new, sha = make_file(tmp_path, "new/place.safetensors", b"moved bytes")
    old = str(tmp_path / "old/place.safetensors")  # no longer on disk
    db.upsert_model(
        {
            "sha256": sha,
            "path": old,
            "meta": {"notes": "precious"},
            "tags": [{"name": "kept", "color": "#123456"}],
        }
    )
    stage(db, new, tags=[{"name": "added"}])

    report = process_pending(db, settings=FAST)

    model = db.get_model(sha)
    assert model is not None
    assert model.path == new
    assert notes_of(model.meta) == {
        "notes": "precious",
        "previous_paths": [old],
        FILE_STAT: marks_of(new),
    }
    assert tags_of(db, sha) == {"kept": "#123456", "added": None}
    assert staging(db) == {}
    assert report.moved == 1


def test_a_path_catalogued_with_other_content_is_a_conflict(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path, sha = make_file(tmp_path, "m.safetensors", b"new content")
    other = "f" * 64
    db.upsert_model({"sha256": other, "path": path, "tags": ["old"]})
    stage(db, path, tags=[{"name": "new"}])

    report = process_pending(db, settings=FAST)

    row = staging(db)[path]
    assert (row.status, row.sha256) == ("conflict", sha)
    assert row.last_error is not None
    assert other in row.last_error
    assert sha in row.last_error
    assert db.get_model(sha) is None
    assert tags_of(db, other) == {"old": None}
    assert db.get_tag("new") is None  # a conflict writes nothing
    assert report.conflict == 1


@pytest.mark.parametrize(
    ("policy", "via_settings", "expected", "superseded"),
    [
        ("merge", False, ("old name", "SDXL", {"a": 1, "b": 3}), {"a": 2}),
        ("keep", False, ("old name", None, {"a": 1}), {"a": 2, "b": 3}),
        ("replace", False, ("new name", "SDXL", {"a": 2, "b": 3}), {"a": 1}),
        ("replace", True, ("new name", "SDXL", {"a": 2, "b": 3}), {"a": 1}),
    ],
)
def test_the_conflict_policy_decides_how_fields_combine(
    db: DatabaseManager,
    tmp_path: Path,
    policy: str,
    via_settings: bool,
    expected: tuple[str, str | None, dict[str, int]],
    superseded: dict[str, int],
) -> None:
    path, sha = make_file(tmp_path, "m.safetensors", b"catalogued already")
    db.upsert_model(
        {
            "sha256": sha,
            "path": path,
            "name": "old name",
            "meta": {"a": 1},
            "tags": [{"name": "x", "color": "#111111"}],
        }
    )
    stage(
        db,
        path,
        name="new name",
        base="SDXL",
        meta={"a": 2, "b": 3},
        tags=[{"name": "x", "color": "#222222"}, {"name": "y"}],
    )
    if via_settings:
        report = process_pending(db, settings=Settings(conflict_policy=policy))
    else:
        settings = Settings(conflict_policy="keep" if policy != "keep" else "replace")
        report = process_pending(db, settings=settings, policy=policy)

    model = db.get_model(sha)
    assert model is not None
    name, base, meta = expected
    # The file's stamp goes with the mtime the model takes (none under "keep").
    stamped = {} if policy == "keep" else {FILE_STAT: marks_of(path)}
    # The notes that gave way are kept too (catalog.combine_meta).
    assert (model.name, model.base, notes_of(model.meta)) == (
        name,
        base,
        {**meta, "superseded": [{"path": path, "meta": superseded}], **stamped},
    )
    assert tags_of(db, sha) == {"x": "#111111", "y": None}  # tags are always united
    assert staging(db) == {}
    assert report.merged == 1


def test_a_file_that_changes_while_hashed_is_hashed_again(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path, _ = make_file(tmp_path, "growing.bin", b"x" * 64 * 1024)
    stage(db, path)

    def grow() -> None:
        with open(path, "ab") as f:
            f.write(b"more")

    events = on_event = MidHash(grow)
    settings = Settings(hash_chunk_bytes=4096, retry_backoff_seconds=0)
    report = process_pending(db, settings=settings, on_event=on_event)

    final_sha = hashlib.sha256(b"x" * 64 * 1024 + b"more").hexdigest()
    model = db.get_model(final_sha)
    assert model is not None
    assert model.size_bytes == 64 * 1024 + 4
    (error,) = events.of("error")
    assert error.outcome == "retried"
    assert error.message is not None
    assert f"{path} changed while it was being hashed" in error.message
    assert error.bytes > 0  # what the first attempt read, for a progress bar to take back
    assert (report.retried, report.imported, report.files_hashed) == (1, 1, 1)


def test_a_tag_named_twice_keeps_the_colour_it_was_given(
    db: DatabaseManager, tmp_path: Path
) -> None:
    one, sha_one = make_file(tmp_path, "one.bin", b"one")
    two, sha_two = make_file(tmp_path, "two.bin", b"two")
    stage(db, one, tags=[{"name": "x", "color": None}, {"name": "X", "color": "red"}])
    stage(db, two, tags=[{"name": "y", "color": "blue"}, {"name": "y", "color": None}])

    process_pending(db, settings=FAST)

    assert tags_of(db, sha_one) == {"x": "#ff0000"}
    assert tags_of(db, sha_two) == {"y": "#0000ff"}


def test_a_colour_given_later_fills_a_tag_that_had_none(
    db: DatabaseManager, tmp_path: Path
) -> None:
    # Hashed by one worker in one run, so its tag cache knows "t" when the
    # third row comes: the colour must be filled all the same.
    for i, colour in enumerate([None, None, "#abcdef", "#000000"]):
        path, _ = make_file(tmp_path, f"{i}.bin", bytes([i]))
        stage(db, path, tags=[{"name": "t", "color": colour}], size_bytes=1)

    process_pending(db, settings=FAST, workers=1)

    tag = db.get_tag("t")
    assert tag is not None
    assert tag.color == "#abcdef"  # filled once, never overwritten


def test_staged_tags_that_cannot_be_stored_fail_at_once(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path, _ = make_file(tmp_path, "m.bin", b"data")
    with db.session_scope() as s:  # written behind the facade's back, as a broken tool might
        s.add(PendingImport(path=path, name="m.bin", tags=[{"name": "ok", "color": "nocolour"}]))

    report = process_pending(db, settings=FAST)

    row = staging(db)[path]
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error is not None
    assert "nocolour" in row.last_error
    assert (report.failed, report.files_hashed, report.retried) == (1, 0, 0)


def test_retry_pending_puts_failed_and_missing_rows_back(
    db: DatabaseManager, tmp_path: Path
) -> None:
    later = tmp_path / "later.bin"
    broken = tmp_path / "broken.bin"
    broken.mkdir()
    stage(db, str(later), tags=[{"name": "t"}])
    stage(db, str(broken))
    process_pending(db, settings=Settings(max_attempts=1))
    assert {p: r.status for p, r in staging(db).items()} == {
        str(later): "missing",
        str(broken): "failed",
    }
    later.write_bytes(b"here now")
    broken.rmdir()
    broken.write_bytes(b"fixed")

    assert retry_pending(db, statuses=("missing",)) == 1
    row = staging(db)[str(later)]
    assert (row.status, row.attempts, row.last_error, row.not_before) == ("pending", 0, None, None)
    assert retry_pending(db) == 1  # failed and missing by default
    report = process_pending(db, settings=FAST)

    assert report.imported == 2
    assert staging(db) == {}
    assert tags_of(db, hashlib.sha256(b"here now").hexdigest()) == {"t": None}
    with pytest.raises(ValidationError, match="'pending' cannot be retried"):
        retry_pending(db, statuses=("pending",))


def test_a_dead_workers_expired_leases_are_taken_over(db: DatabaseManager, tmp_path: Path) -> None:
    paths = [make_file(tmp_path, f"{i}.bin", bytes([i]) * 100)[0] for i in range(3)]
    for path in paths:
        stage(db, path, size_bytes=100)
    dead = leases.claim_batch(db, "dead-worker", limit=10, lease_seconds=1)
    assert [r.path for r in dead] == paths

    # The lease runs out after one second: the pool waits for it, then takes over.
    report = process_pending(db, settings=FAST)

    assert report.imported == 3
    assert staging(db) == {}
    ids = [r.id for r in dead]
    assert leases.renew(db, "dead-worker", ids, 60) == set()
    assert leases.release(db, "dead-worker", ids) == set()


def test_nothing_is_written_for_a_row_whose_lease_was_lost(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path, sha = make_file(tmp_path, "m.bin", b"content")
    stage(db, path, tags=[{"name": "t", "color": "red"}])
    (mine,) = leases.claim_batch(db, "slow", limit=1, lease_seconds=60)
    _expire(db)  # "slow" stalled past its lease...
    (theirs,) = leases.claim_batch(db, "fast", limit=1, lease_seconds=60)  # ...and lost the row
    assert theirs.id == mine.id
    item = mine.hashed(sha, 7, 1)

    assert finish.finish(db, "slow", mine.id, item, policy="merge", tag_cache=TagCache()) is None
    assert leases.record_failure(db, "slow", mine, "x", max_attempts=3, backoff_seconds=0) is None
    assert leases.mark_missing(db, "slow", mine, "x") is False
    assert leases.renew(db, "slow", [mine.id], 60) == set()
    assert leases.release(db, "slow", [mine.id]) == set()
    with db.session_scope() as s:  # the rolled-back finish left no model, tag or link
        assert s.scalar(select(func.count()).select_from(Model)) == 0
        assert s.scalar(select(func.count()).select_from(Tag)) == 0
        assert s.scalar(select(func.count()).select_from(model_tags)) == 0
    row = staging(db)[path]
    assert (row.status, row.claimed_by, row.attempts) == ("claimed", "fast", 0)

    settled = finish.finish(db, "fast", theirs.id, item, policy="merge", tag_cache=TagCache())
    assert settled is not None
    assert settled.outcome is Outcome.IMPORTED
    assert tags_of(db, sha) == {"t": "#ff0000"}


def test_a_batch_with_one_lost_lease_settles_the_rows_still_held(
    db: DatabaseManager, tmp_path: Path
) -> None:
    """The batch is settled without a look at which rows are held; the lease guard
    misses one, so it is rolled back and settled again, looking first."""
    (path_a, sha_a), (path_b, sha_b) = (
        make_file(tmp_path, "a.bin", b"a"),
        make_file(tmp_path, "b.bin", b"b"),
    )
    stage(db, path_a, size_bytes=1, tags=[{"name": "t", "color": "red"}])
    stage(db, path_b, size_bytes=1, tags=[{"name": "t", "color": "red"}])
    mine = leases.claim_batch(db, "slow", limit=2, lease_seconds=60)
    assert [row.path for row in mine] == [path_a, path_b]
    with db.session_scope() as s:  # row a's lease ran out, and "fast" took it
        s.execute(
            update(PendingImport)
            .where(PendingImport.id == mine[0].id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    (theirs,) = leases.claim_batch(db, "fast", limit=2, lease_seconds=60)
    assert theirs.id == mine[0].id
    items = [(mine[0].id, mine[0].hashed(sha_a, 1, 1)), (mine[1].id, mine[1].hashed(sha_b, 1, 1))]
    outcomes, _ = finish.finish_batch(db, "slow", items, policy="merge", tag_cache=TagCache())
    assert outcomes[mine[0].id] is None
    settled = outcomes[mine[1].id]
    assert settled is not None
    assert settled.outcome is Outcome.IMPORTED
    with db.session_scope() as s:
        assert set(s.scalars(select(Model.sha256))) == {sha_b}
    assert tags_of(db, sha_b) == {"t": "#ff0000"}
    assert list(staging(db)) == [path_a]
    assert staging(db)[path_a].claimed_by == "fast"


def test_an_expired_lease_nobody_took_is_released_but_not_finished(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path, sha = make_file(tmp_path, "m.bin", b"content")
    stage(db, path)
    (row,) = leases.claim_batch(db, "w", limit=1, lease_seconds=60)
    _expire(db)
    cache = TagCache()
    assert (
        finish.finish(db, "w", row.id, row.hashed(sha, 7, 1), policy="merge", tag_cache=cache)
        is None
    )
    assert leases.release(db, "w", [row.id]) == {row.id}
    released = staging(db)[path]
    assert (released.status, released.claimed_by, released.lease_expires_at) == (
        "pending",
        None,
        None,
    )
    assert released.attempts == 0


def test_claims_are_disjoint_oldest_first_and_bounded_in_bytes(
    db: DatabaseManager, tmp_path: Path
) -> None:
    mib = 1024 * 1024
    for i, size in enumerate([100 * mib, 100 * mib, 100 * mib, 10, None, 10]):
        stage(db, str(tmp_path / f"{i}.bin"), size_bytes=size)
    first = leases.claim_batch(db, "a", limit=8, lease_seconds=60)
    second = leases.claim_batch(db, "b", limit=8, lease_seconds=60)
    third = leases.claim_batch(db, "c", limit=8, lease_seconds=60)
    fourth = leases.claim_batch(db, "d", limit=8, lease_seconds=60)
    names = [[Path(r.path).name for r in batch] for batch in (first, second, third, fourth)]
    # 256 MiB per batch; a row of unknown size counts as a whole batch.
    assert names == [["0.bin", "1.bin"], ["2.bin", "3.bin"], ["4.bin"], ["5.bin"]]
    assert leases.claim_batch(db, "e", limit=8, lease_seconds=60) == []
    owners = {r.path: r.claimed_by for r in staging(db).values()}
    assert sorted(owners.values()) == ["a", "a", "b", "b", "c", "d"]
    state = overview.queue_state(db)
    assert state.unfinished == 6
    assert state.wait_seconds is not None
    assert 50 < state.wait_seconds <= 60


def test_within_budget_always_takes_one_row() -> None:
    assert leases.within_budget([], 10) == []
    assert leases.within_budget([(1, 50), (2, 1)], 10) == [1]
    assert leases.within_budget([(1, 4), (2, 6), (3, 1)], 10) == [1, 2]
    assert leases.within_budget([(1, None), (2, 1)], 10) == [1]
    assert leases.within_budget([(1, 10), (2, 0)], 10) == [1, 2]


def test_a_broken_event_callback_loses_nothing(db: DatabaseManager, tmp_path: Path) -> None:
    path, sha = make_file(tmp_path, "m.bin", b"data")
    stage(db, path)

    def broken(event: WorkerEvent) -> None:
        raise RuntimeError("the progress bar fell over")

    report = process_pending(db, settings=FAST, on_event=broken)

    assert report.imported == 1
    assert db.get_model(sha) is not None


def test_process_pending_opens_the_configured_catalog(db_url: str, tmp_path: Path) -> None:
    path, sha = make_file(tmp_path, "m.bin", b"data")
    db = DatabaseManager(db_url)
    db.init_db()
    stage(db, path)
    db.dispose()

    report = process_pending(settings=Settings(db_url=db_url, workers=3))

    assert (report.imported, report.workers) == (1, 3)
    check = DatabaseManager(db_url)
    assert check.get_model(sha) is not None
    check.dispose()


def test_bad_arguments_are_refused(db: DatabaseManager) -> None:
    with pytest.raises(ConfigError, match="workers 0"):
        process_pending(db, workers=0)
    with pytest.raises(ConfigError, match="'newest'"):
        process_pending(db, policy="newest")


def test_a_catalog_failure_stops_the_pool_with_a_clear_error(tmp_path: Path) -> None:
    empty = DatabaseManager(tmp_path / "never-initialised.sqlite3")
    with pytest.raises(MigrationError, match="a worker stopped on an error"):
        process_pending(empty, workers=2)
    empty.dispose()


def test_a_driver_error_while_settling_is_a_catalog_error_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """On SQLite the batch's statements run on the driver's own connection: its errors
    still reach the pool as the catalog's, and the batch is rolled back and handed back."""
    db = DatabaseManager(tmp_path / "catalog.sqlite3")
    db.init_db()
    path, _ = make_file(tmp_path, "a.bin", b"a" * 100)
    stage(db, path, meta={"notes": "kept"})
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE DELETE ON pending_import "
            "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    with pytest.raises(MigrationError, match="refused by a trigger") as raised:
        process_pending(db, settings=FAST, workers=1)
    assert isinstance(raised.value.__cause__, CatalogError)
    assert db.count_models() == 0
    (row,) = staging(db).values()
    assert (row.status, row.claimed_by, row.meta) == ("pending", None, {"notes": "kept"})
    db.dispose()


@pytest.mark.parametrize("last_rowid", [1, 2**63 - 1])
def test_the_new_models_of_a_batch_are_told_apart_on_sqlite(
    tmp_path: Path, last_rowid: int
) -> None:
    """A batch with a file the catalog holds: the others are told apart as new, also
    past the largest rowid, where SQLite numbers new rows at random."""
    db = DatabaseManager(tmp_path / "catalog.sqlite3")
    db.init_db()
    sha = {name: hashlib.sha256(name.encode()).hexdigest() for name in "abcd"}
    db.upsert_model({"sha256": sha["a"], "path": "/m/a"})
    stamp = "2024-01-01 00:00:00.000000"
    rows = [
        [
            {
                "sha256": sha[name],
                "path": path,
                "path_key": None,
                "name": name,
                "type": "other",
                "base": None,
                "size_bytes": 1,
                "mtime_ns": 1,
                "created_at": stamp,
                "updated_at": stamp,
                "meta": {},
            }[column]
            for column in MODEL_COLUMNS
        ]
        for name, path in [("b", "/m/b"), ("a", "/m/a-copy"), ("c", "/m/a"), ("d", "/m/d")]
    ]
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE models SET rowid = {last_rowid}")
        new = insert_models(statements_for(conn), conn, rows)
    assert new == {"/m/b", "/m/d"}  # a's content and a's path are taken
    assert sorted(m.path for m in db.find_models()) == ["/m/a", "/m/b", "/m/d"]
    db.dispose()


def test_report_adds_up_and_serialises() -> None:
    one = WorkerReport(imported=2, failed=1, bytes_hashed=10, files_hashed=2)
    two = WorkerReport(duplicate=1, retried=3, bytes_hashed=5, files_hashed=1)
    total = WorkerReport.combine([one, two], seconds=1.23456)
    assert total.to_dict() == {
        "imported": 2,
        "merged": 0,
        "moved": 0,
        "replaced": 0,
        "duplicate": 1,
        "conflict": 0,
        "missing": 0,
        "failed": 1,
        "retried": 3,
        "abandoned": 0,
        "released": 0,
        "files_hashed": 3,
        "bytes_hashed": 15,
        "seconds": 1.235,
        "workers": 2,
        "finished": 4,
    }


def _expire(db: DatabaseManager, *, not_before: bool = False) -> None:
    """Move leases (or back-offs) into the past, as if their time had run out."""
    past = utcnow() - timedelta(seconds=1)
    values = {"not_before": past} if not_before else {"lease_expires_at": past}
    column = PendingImport.not_before if not_before else PendingImport.lease_expires_at
    with db.session_scope() as s:
        s.execute(update(PendingImport).where(column.is_not(None)).values(**values))
