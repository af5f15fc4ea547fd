"""Stage 1 when legacy rows meet each other or the catalog: moves, the conflict
policies, paths that collide once cleaned, and writes that can never succeed.
Every scenario is run twice: the second run must change nothing."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from support.legacy import (
    pending_by_legacy_id,
    sha,
    snapshot,
    tags_of,
    with_batch,
)

from modelvault import DatabaseManager, Settings
from modelvault.errors import MigrationError
from modelvault.migration.importer import import_legacy_data
from modelvault.migration.sample import (
    DEFAULT_CREATED_AT_MS,
    LegacyModel,
    LegacyTag,
    system_tags,
    write_legacy_catalog,
)

BEFORE_THE_SCAN_NS = (DEFAULT_CREATED_AT_MS - 60_000) * 1_000_000


def live_file(folder: Path, name: str, data: bytes) -> str:
    """A model file last written before the legacy app saw it (its rows' default created_at)."""
    path = folder / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(BEFORE_THE_SCAN_NS, BEFORE_THE_SCAN_NS))
    return str(path)


def everywhere(meta: dict[str, Any], key: str) -> list[Any]:
    """The values of ``key`` in a model's notes and in the notes that gave way."""
    found = [meta[key]] if key in meta else []
    found += [e["meta"][key] for e in meta.get("superseded", []) if key in e["meta"]]
    return found


@pytest.fixture
def catalog_with(db_url: str) -> Iterator[Any]:
    """A catalog on each backend with the given conflict policy in its settings."""
    made: list[DatabaseManager] = []

    def make(policy: str) -> DatabaseManager:
        manager = DatabaseManager(db_url, settings=Settings(db_url=db_url, conflict_policy=policy))
        manager.init_db()
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.dispose()


# -- a model moves to the row whose file exists ----------------------------------------


@pytest.mark.parametrize("batch", [1, 10], ids=["batch-per-row", "one-batch"])
def test_the_model_moves_to_the_row_whose_file_exists(
    db: DatabaseManager, tmp_path: Path, batch: int
) -> None:
    live = live_file(tmp_path, "live.safetensors", b"0123456789")
    alive = live_file(tmp_path, "alive.safetensors", b"abc")
    rows = [
        # the first copy is gone, the second is on disk: the model moves there
        LegacyModel(1, "/gone/old.safetensors", "lora", hash_hex=sha("m"),
                    extra_json='{"description": "old notes", "rating": 3}'),
        LegacyModel(2, live, "lora", size_bytes=10, hash_hex=sha("m"),
                    extra_json='{"description": "new notes"}'),
        # both gone: nothing to move to, the second is a duplicate
        LegacyModel(3, "/gone/a.safetensors", "vae", hash_hex=sha("d")),
        LegacyModel(4, "/gone/b.safetensors", "vae", hash_hex=sha("d")),
        # the first is on disk, the second gone: a duplicate, the model stays
        LegacyModel(5, alive, "vae", size_bytes=3, hash_hex=sha("s")),
        LegacyModel(6, "/gone/c.safetensors", "vae", hash_hex=sha("s")),
    ]  # fmt: skip
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3",
        rows=rows,
        tags=[*system_tags(), LegacyTag(8, "fav", "#f00")],
        links=[(1, 2), (2, 8)],
    )
    report = import_legacy_data(path, with_batch(db, batch))
    assert (report.imported, report.moved, report.duplicates, report.merged) == (3, 1, 2, 0)
    assert report.accounted == report.rows_read == 6

    moved = db.get_model(sha("m"))
    assert moved is not None
    assert moved.path == live
    assert moved.meta["previous_paths"] == ["/gone/old.safetensors"]
    assert (moved.meta["description"], moved.meta["rating"]) == ("old notes", 3)  # merge
    assert moved.meta["legacy"]["id"] == 1
    (gave_way,) = moved.meta["superseded"]
    assert gave_way["path"] == live
    assert gave_way["meta"]["description"] == "new notes"
    assert gave_way["meta"]["legacy"]["id"] == 2
    assert tags_of(db, sha("m")) == ["fav", "lora"]
    pending = pending_by_legacy_id(db)
    assert sorted(pending) == [4, 6]
    assert {p.status for p in pending.values()} == {"duplicate"}
    assert db.get_model(sha("d")) is not None
    assert db.get_model(sha("d")).path == "/gone/a.safetensors"  # type: ignore[union-attr]
    assert db.get_model(sha("s")).path == alive  # type: ignore[union-attr]

    before = snapshot(db)
    again = import_legacy_data(path, with_batch(db, batch))
    assert snapshot(db) == before
    assert again.already_present == again.rows_read == 6
    assert again.warnings == []


def test_rows_meet_a_catalog_that_holds_models_in_id_order(
    db: DatabaseManager, tmp_path: Path
) -> None:
    """The user's model (gone from its path) moves to row 2's file; row 3 claims
    that old path with another content. In id order the model has moved away by
    then and row 3 is a duplicate; read in hash order, row 3 (a hash of zeros)
    would come first and be staged as a conflict with a model that moves a
    moment later. Into a catalog that holds models, rows come in id order."""
    data = b"the user's model"
    mine = hashlib.sha256(data).hexdigest()
    db.upsert_model({"sha256": mine, "path": "/gone/old",
                     "name": "mine", "type": "lora"})  # fmt: skip
    live = live_file(tmp_path, "mine.safetensors", data)
    rows = [
        LegacyModel(1, "/gone/first", "lora", hash_hex="0" * 64),
        LegacyModel(2, live, "lora", size_bytes=len(data), hash_hex=mine),
        LegacyModel(3, "/gone/old", "lora", hash_hex="0" * 64),
    ]  # fmt: skip
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    report = import_legacy_data(path, with_batch(db, 1))
    assert (report.imported, report.moved, report.duplicates, report.conflicts) == (1, 1, 1, 0)
    assert pending_by_legacy_id(db)[3].status == "duplicate"


# -- a re-run changes nothing, under every policy ------------------------------------


@pytest.mark.parametrize("policy", ["merge", "keep", "replace"])
def test_a_rerun_changes_nothing_under_every_policy(
    catalog_with: Any, tmp_path: Path, policy: str
) -> None:
    db = catalog_with(policy)
    kept = live_file(tmp_path, "kept.safetensors", b"kept")
    moved_here = live_file(tmp_path, "here.safetensors", b"here")
    other_here = live_file(tmp_path, "there.safetensors", b"there")
    # what the user catalogued before the migration
    db.upsert_model({"sha256": sha("a"), "path": kept, "type": "checkpoint",
                     "meta": {"description": "mine"}, "tags": ["v3-tag"]})  # fmt: skip
    db.upsert_model({"sha256": sha("b"), "path": "/m/b", "meta": {"legacy": "the user's own"}})
    db.upsert_model({"sha256": sha("c"), "path": "/gone/c", "meta": {"description": "c notes"}})
    # a model an earlier import of another legacy file put at a path now gone
    earlier = write_legacy_catalog(
        tmp_path / "earlier.sqlite3",
        rows=[LegacyModel(9, "/gone/d", "vae", hash_hex=sha("d"), extra_json='{"x": "earlier"}')],
    )
    assert import_legacy_data(earlier, db).imported == 1

    rows = [
        LegacyModel(1, kept, "lora", size_bytes=4, hash_hex=sha("a"),
                    extra_json='{"description": "legacy", "rating": 1}'),
        LegacyModel(2, "/m/b", "lora", hash_hex=sha("b"), extra_json='{"description": "b"}'),
        LegacyModel(3, moved_here, "lora", size_bytes=4, hash_hex=sha("c"),
                    extra_json='{"rating": 2}'),
        LegacyModel(4, other_here, "vae", size_bytes=5, hash_hex=sha("d"),
                    extra_json='{"x": "later"}'),
    ]  # fmt: skip
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=rows, links=[(1, 2), (2, 2), (3, 2), (4, 4)]
    )
    report = import_legacy_data(path, db)
    assert (report.merged, report.moved, report.already_present) == (2, 2, 0)
    assert report.accounted == report.rows_read == 4

    a = db.get_model(sha("a"))
    assert a is not None
    assert sorted(everywhere(a.meta, "description")) == ["legacy", "mine"]  # nothing lost
    assert a.meta["legacy"]["id"] == 1  # provenance is bookkeeping: taken under every policy
    assert a.type == ("lora" if policy == "replace" else "checkpoint")
    assert [t.name for t in a.tags] == ["lora", "v3-tag"]
    b = db.get_model(sha("b"))
    assert b is not None
    assert "the user's own" in everywhere(b.meta, "legacy")
    c = db.get_model(sha("c"))
    assert c is not None
    assert (c.path, c.meta["previous_paths"]) == (moved_here, ["/gone/c"])
    assert (everywhere(c.meta, "description"), everywhere(c.meta, "rating")) == (["c notes"], [2])
    d = db.get_model(sha("d"))
    assert d is not None
    assert d.path == other_here
    assert sorted(everywhere(d.meta, "x")) == ["earlier", "later"]

    before = snapshot(db)
    again = import_legacy_data(path, db)
    assert snapshot(db) == before
    assert again.already_present == again.rows_read == 4
    assert again.warnings == []  # every row is recognised as this file's own
    before_earlier = snapshot(db)
    assert import_legacy_data(earlier, db).already_present == 1  # /gone/d: moved from there
    assert snapshot(db) == before_earlier


def test_a_null_note_is_kept_under_keep(catalog_with: Any, tmp_path: Path) -> None:
    db = catalog_with("keep")
    db.upsert_model({"sha256": sha("a"), "path": "/m/a", "meta": {"description": "mine"}})
    rows = [LegacyModel(1, "/m/a", hash_hex=sha("a"), extra_json='{"checked": null}')]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    assert import_legacy_data(path, db).merged == 1
    model = db.get_model(sha("a"))
    assert model is not None
    assert everywhere(model.meta, "checked") == [None]


def test_the_policy_argument_overrides_the_settings(db: DatabaseManager, tmp_path: Path) -> None:
    assert db.settings.conflict_policy == "merge"
    db.upsert_model({"sha256": sha("a"), "path": "/m/a", "type": "checkpoint", "name": "v3"})
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=[LegacyModel(1, "/m/a", "lora", "legacy", hash_hex=sha("a"))]
    )
    report = import_legacy_data(path, db, policy="replace")
    assert report.merged == 1
    model = db.get_model(sha("a"))
    assert model is not None
    assert (model.name, model.type) == ("legacy", "lora")


# -- paths that become equal once cleaned ----------------------------------------------


def legacy_with_colliding_paths(folder: Path) -> Path:
    rows = [
        LegacyModel(1, "/m/a\x00b", "lora", hash_hex=sha("1")),  # reads as /m/a\ufffdb
        LegacyModel(2, "/m/a\ufffdb", "lora", hash_hex=sha("2")),
        LegacyModel(3, "/m/blob-c", "lora", hash_hex=sha("3")),  # made a blob b"/m/c" below
        LegacyModel(4, "/m/c", "lora", extra_json='{"description": "text"}'),
        LegacyModel(5, "/m/blob-e", "lora", hash_hex=sha("5")),  # a blob, alone: b"/m/e"
        LegacyModel(6, "/m/y\x00", "vae"),  # two cleaned paths that meet: /m/y\ufffd
        LegacyModel(7, "/m/blob-y", "vae", hash_hex=sha("7")),  # b"/m/y\xef\xbf\xbd"
        LegacyModel(8, "/m/a\ufffdb (legacy id 1)", "vae"),  # the first place it would take
    ]
    path = write_legacy_catalog(folder / "l.sqlite3", rows=rows, links=[(1, 2), (3, 2)])
    with sqlite3.connect(path) as conn:
        for legacy_id, blob in [(3, b"/m/c"), (5, b"/m/e"), (7, "/m/y\ufffd".encode())]:
            conn.execute("UPDATE models SET path = ? WHERE id = ?", (blob, legacy_id))
    conn.close()
    return path


@pytest.mark.parametrize("batch", [1, 3, 100], ids=["batch-per-row", "batch-3", "one-batch"])
def test_paths_that_collide_once_cleaned_are_staged_as_conflicts(
    db: DatabaseManager, tmp_path: Path, batch: int
) -> None:
    path = legacy_with_colliding_paths(tmp_path)
    report = import_legacy_data(path, with_batch(db, batch))
    assert (report.imported, report.conflicts, report.staged) == (2, 3, 3)
    assert report.accounted == report.rows_read == 8

    pending = pending_by_legacy_id(db)
    first = pending[1]
    assert (first.status, first.sha256) == ("conflict", sha("1"))
    assert first.path == "/m/a\ufffdb (legacy id 1, 2)"  # "(legacy id 1)" is row 8's path
    assert first.meta["legacy"]["path"] == "/m/a\x00b"
    assert first.last_error is not None
    assert "the path of legacy row 2" in first.last_error
    assert first.tags == [{"name": "lora", "color": None}]
    assert db.get_model(sha("2")).path == "/m/a\ufffdb"  # type: ignore[union-attr]
    blob = pending[3]
    assert (blob.status, blob.path, blob.meta["legacy"]["path"]) == (
        "conflict", "/m/c (legacy id 3)", "/m/c")  # fmt: skip
    assert (pending[4].status, pending[4].path) == ("pending", "/m/c")
    assert db.get_model(sha("5")).path == "/m/e"  # type: ignore[union-attr]
    assert pending[6].path == "/m/y\ufffd"
    assert (pending[7].status, pending[7].path) == ("conflict", "/m/y\ufffd (legacy id 7)")
    assert "legacy row 6" in (pending[7].last_error or "")
    reasons = {w["legacy_id"]: w["reason"] for w in report.warnings}
    assert reasons[1].startswith("conflict: its path holds a NUL character")
    assert reasons[3].startswith("conflict: its path is not stored as text")

    before = snapshot(db)
    again = import_legacy_data(path, with_batch(db, batch))
    assert snapshot(db) == before
    assert again.already_present == again.rows_read == 8


def test_a_cleaned_path_goes_to_the_lowest_id_whatever_the_hashes(
    db: DatabaseManager, tmp_path: Path
) -> None:
    """Which of two rows whose paths read alike keeps the path is decided by which
    comes first; such a file is read in id order, so it is the lowest id, and a
    re-run after the legacy app hashed the other one changes nothing."""
    rows = [
        LegacyModel(1, "/gone/blob", "lora", hash_hex=sha("1")),  # made b"/gone/x\xff" below
        LegacyModel(2, "/gone/x\x00", "lora"),  # both read as /gone/x\ufffd
    ]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    with sqlite3.connect(path) as legacy_app:
        legacy_app.execute("UPDATE models SET path = ? WHERE id = 1", (b"/gone/x\xff",))
    legacy_app.close()
    import_legacy_data(path, db)
    assert db.get_model(sha("1")).path == "/gone/x\ufffd"  # type: ignore[union-attr]
    assert pending_by_legacy_id(db)[2].path == "/gone/x\ufffd (legacy id 2)"
    before = snapshot(db)
    with sqlite3.connect(path) as legacy_app:
        legacy_app.execute("UPDATE models SET hash_hex = ? WHERE id = 2", (sha("2"),))
    legacy_app.close()
    again = import_legacy_data(path, db)
    assert snapshot(db) == before
    assert again.already_present == again.rows_read == 2


# -- a write that can never succeed is not tried again ------------------------------


def test_a_write_that_fails_the_same_way_again_is_not_retried(
    db: DatabaseManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with db.engine.begin() as conn:  # a rule of this catalog's own that the rows break
        conn.execute(text("CREATE UNIQUE INDEX only_one_name ON models (name)"))
    rows = [
        LegacyModel(1, "/m/x", "lora", "same", hash_hex=sha("1")),
        LegacyModel(2, "/m/y", "lora", "other", hash_hex=sha("2")),
        LegacyModel(3, "/m/z", "lora", "same", hash_hex=sha("3")),
    ]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    caplog.set_level(logging.INFO, logger="modelvault.migration.importer")
    with pytest.raises(
        MigrationError, match=r"3 legacy rows \(ids 1 to 3\) of .* trying again would fail"
    ):
        import_legacy_data(path, db)
    # Written once (PostgreSQL's COPY runs beside SQLAlchemy's statement events, so
    # the retry's own log line is what shows the batch was not written again).
    assert not [r for r in caplog.records if "reading it again" in r.getMessage()]
    assert db.count_models() == 0


def test_a_batch_a_concurrent_writer_got_into_is_written_again(
    db: DatabaseManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another program catalogues a row's content between the batch's look-ups and
    its write: the write breaks the unique key, the batch is looked at again and
    written with the row settled against that model."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite: the import holds the write lock from its look-ups on")
    rows = [
        LegacyModel(1, "/m/x", "lora", hash_hex=sha("1")),
        LegacyModel(2, "/m/y", "lora", hash_hex=sha("2")),
    ]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=[(1, 2), (2, 2)])
    other = DatabaseManager(db.url.render_as_string(hide_password=False))
    got_in: list[str] = []

    def another_writer(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not got_in and "JOIN models AS t ON t.sha256" in statement:  # its look-up
            other.upsert_model({"sha256": sha("1"), "path": "/m/elsewhere"})
            got_in.append(statement)

    caplog.set_level(logging.INFO, logger="modelvault.migration.importer")
    event.listen(db.engine, "after_cursor_execute", another_writer)
    try:
        report = import_legacy_data(path, db)
    finally:
        event.remove(db.engine, "after_cursor_execute", another_writer)
        other.dispose()
    assert got_in
    assert [r for r in caplog.records if "reading it again" in r.getMessage()]
    assert (report.imported, report.duplicates, report.rows_read) == (1, 1, 2)
    assert pending_by_legacy_id(db)[1].status == "duplicate"
    assert [t.name for t in db.get_tags_for_model(sha("1"))] == ["lora"]
