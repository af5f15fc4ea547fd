"""The legacy catalog reader: layouts, refusals, read-only access, batches; and the
writer of legacy files (``modelvault.migration.sample``) that the other tests use."""

from __future__ import annotations

import hashlib
import itertools
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from modelvault import DatabaseManager, LegacyDatabaseError
from modelvault.legacy import link_reads
from modelvault.legacy.layout import LegacyLayout, LegacyRow
from modelvault.legacy.order import IdRanges
from modelvault.legacy.reader import open_legacy
from modelvault.migration.sample import (
    SYSTEM_TAG_NAMES,
    LegacyModel,
    LegacyTag,
    hold_open_in_wal,
    system_tags,
    write_legacy_catalog,
)
from modelvault.normalize import parse_sha256

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def quirky_rows() -> list[LegacyModel]:
    return [
        LegacyModel(1, "/m/loras/a.safetensors", "lora", "a.safetensors", 10, SHA),
        LegacyModel(2, "/m/loras/b.safetensors", "lora", None, None, ""),
        LegacyModel(5, "C:\\ComfyUI\\models\\checkpoints\\c.ckpt", "checkpoint", hash_hex=None),
        LegacyModel(6, "/m/vae/d.pt", "vae", hash_hex=f"  {SHA.upper()}\n", extra_json="{oops"),
        LegacyModel(9, "/m/e.pt", "other", hash_hex="a1b2c3d4e5", meta_json='{"k": 1}'),
    ]


FOLDERS = {
    1: "/m/loras",
    2: "/m/loras",
    5: "C:\\ComfyUI\\models\\checkpoints",
    6: "/m/vae",
    9: "/m",
}


def read_all(
    path: Path, size: int = 2
) -> tuple[list[LegacyRow], list[list[tuple[object, object]]]]:
    with open_legacy(path) as legacy:
        batches = list(legacy.batches(size))
    rows = [row for batch in batches for row in batch.rows]
    return rows, [batch.links for batch in batches]


@pytest.mark.parametrize("layout", [1, 2])
def test_both_layouts_are_recognised_and_read_back_exactly(tmp_path: Path, layout: int) -> None:
    path = write_legacy_catalog(
        tmp_path / "legacy.sqlite3",
        layout=layout,
        rows=quirky_rows(),
        links=[(1, 2), (5, 1), (9, 7)],
        hash_not_null=False,
    )
    with open_legacy(path) as legacy:
        assert legacy.layout is LegacyLayout(layout)
        assert legacy.count_models() == 5
        assert [t.name for t in legacy.tags()] == list(SYSTEM_TAG_NAMES)
    rows, _ = read_all(path)
    rows.sort(key=lambda row: row.id)  # read in hash order: see test_models_come_in_hash_order
    written = quirky_rows()
    assert [r.id for r in rows] == [w.id for w in written]
    for row, want in zip(rows, written, strict=True):
        assert (row.path, row.name, row.type, row.size_bytes, row.hash_hex) == (
            want.path,
            want.name,
            want.type,
            want.size_bytes,
            want.hash_hex,
        )
        assert (row.created_at, row.meta_json, row.extra_json) == (
            want.created_at,
            want.meta_json,
            want.extra_json,
        )
        if layout == 1:
            assert (row.hash_algo, row.mtime_ns, row.updated_at) == ("sha256", None, None)
            assert row.dir_path == FOLDERS[row.id]
        else:
            assert (row.dir_path, row.hash_algo, row.updated_at) == (None, None, None)


def test_every_link_comes_once_with_its_model_or_after_them_all(tmp_path: Path) -> None:
    rows = [LegacyModel(i, f"/m/{i}") for i in (1, 2, 5, 6, 7)]
    links = [(0, 1), (1, 1), (1, 2), (3, 1), (6, 99), (7, 1), (8, 1), (1000, 3)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=links)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO model_tags VALUES ('text-id', 1)")  # hand-edited junk
    conn.commit()
    conn.close()
    got_rows, got_links = read_all(path, size=2)
    assert [r.id for r in got_rows] == [1, 2, 5, 6, 7]  # no hashes: id order
    assert got_links == [
        [(1, 1), (1, 2)],  # the links of models 1 and 2
        [(6, 99)],  # of 5 and 6
        [(7, 1)],
        [(0, 1), (3, 1)],  # then those up to the last model's id that name no model
        [(8, 1), (1000, 3), ("text-id", 1)],  # after it (rows added meanwhile would be here)
    ]


def test_models_come_in_hash_order_those_without_one_first(tmp_path: Path) -> None:
    """The catalog's SHA-256 indexes take each batch as one stretch. Rows of one
    content (after trimming and in any case) come in one batch, the lowest id
    first: it becomes the model, the others its duplicates, as in id order."""
    hashes: dict[int, str | None] = {}
    for i in range(1, 301):
        content = hashlib.sha256(str(i % 250).encode()).hexdigest()  # ids 251-300: copies
        spelled = [content, f" {content.upper()}\t", f"\u3000{content}"][i % 3]
        hashes[i] = [spelled, spelled, spelled, "", None, "junk", content[:63]][i % 7]
    rows = [LegacyModel(i, f"/m/{i}", hash_hex=value) for i, value in hashes.items()]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, hash_not_null=False)
    with open_legacy(path) as legacy:
        batches = [[row.id for row in batch.rows] for batch in legacy.batches(16)]
    order = [i for batch in batches for i in batch]
    assert sorted(order) == list(hashes)  # each once
    assert max(len(batch) for batch in batches) == 16

    content = {i: parse_sha256(value) for i, value in hashes.items()}
    unhashed = sorted(i for i in hashes if content[i] is None)
    assert order[: len(unhashed)] == unhashed  # first, in id order
    hashed = [batch for batch in batches if batch and content[batch[0]] is not None]
    assert all(batch == sorted(batch) for batch in hashed)  # each in id order
    stretches = [[str(content[i]) for i in batch] for batch in hashed]
    for before, after in itertools.pairwise(stretches):
        assert max(before)[:2] <= min(after)[:2]  # one stretch of hashes after another
    copies = {i for i in hashes if list(content.values()).count(content[i]) > 1}
    assert copies - set(unhashed), "the data has rows of one content"
    batch_of = {i: number for number, batch in enumerate(batches) for i in batch}
    for i in copies - set(unhashed):  # rows of one content, in one batch
        assert len({batch_of[j] for j in hashes if content[j] == content[i]}) == 1


def test_a_path_is_found_only_where_it_is_stored_as_that_text(tmp_path: Path) -> None:
    rows = [
        LegacyModel(1, "/m/a"),
        LegacyModel(2, "/m/blob"),  # made the blob b"/m/a" below
        LegacyModel(3, "/m/a\x00"),
        LegacyModel(4, "/m/A"),
    ]
    path = write_legacy_catalog(tmp_path / "legacy.sqlite3", rows=rows)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE models SET path = ? WHERE id = 2", (b"/m/a",))
    conn.close()
    with open_legacy(path) as legacy:
        assert legacy.ids_with_path("/m/a") == [1]  # not the blob, nor the one with a NUL
        assert legacy.ids_with_path("/m/a\x00") == [3]
        assert legacy.ids_with_path("/m/a\ufffd") == []
        assert legacy.ids_with_path("/m/b") == []


def test_an_empty_catalog_has_one_batch_with_every_link(tmp_path: Path) -> None:
    path = write_legacy_catalog(tmp_path / "l.sqlite3", links=[(4, 1)])
    assert read_all(path) == ([], [[(4, 1)]])


def _bad_file(kind: str, folder: Path) -> tuple[Path, str]:
    """A file that is not a legacy catalog, and what the error must say about it."""
    target = folder / "hikaze_mm.sqlite3"
    if kind == "missing":
        return target, "does not exist"
    if kind == "folder":
        return folder, "is a folder, not a file: give the hikaze_mm.sqlite3 file inside it"
    if kind == "folder-with-catalog":
        write_legacy_catalog(target)
        return folder, f"is a folder, not a file: did you mean {target}"
    if kind == "empty":
        target.write_bytes(b"")
        return target, "is empty"
    if kind == "text":
        target.write_text("name,hash\nmodel,abc\n")
        return target, "is not a SQLite database, or it is encrypted"
    if kind == "encrypted":
        target.write_bytes(bytes(range(256)) * 64)
        return target, "is not a SQLite database, or it is encrypted"
    if kind == "short-header":
        target.write_bytes(b"SQLite format 3\x00" + b"\x10\x00")
        return target, "is truncated"
    if kind in ("truncated", "truncated-on-page", "damaged"):
        rows = (LegacyModel(i, f"/m/{i}" + "x" * 200, extra_json="{}") for i in range(1, 400))
        write_legacy_catalog(target, rows=rows)
        data = target.read_bytes()
        if kind == "truncated":
            target.write_bytes(data[: len(data) // 2 + 10])
        elif kind == "truncated-on-page":
            target.write_bytes(data[: 4096 * 3])
        else:  # scribble over the schema page (page 1 after its header)
            target.write_bytes(data[:100] + b"\xff" * 3996 + data[4096:])
        return target, "is damaged" if kind == "damaged" else "is truncated"
    conn = sqlite3.connect(target)
    if kind == "other-tables":
        conn.close()
        target.unlink()
        write_legacy_catalog(target)
        conn = sqlite3.connect(target)
        conn.execute("CREATE TABLE notes (x)")
        conn.commit()
        conn.close()
        return target, "has tables a legacy catalog never had (notes)"
    if kind == "no-tables":
        conn.execute("CREATE TABLE models (id INTEGER)")
        conn.commit()
        conn.close()
        return target, "has no directories, model_tags, schema_version, tags tables"
    conn.close()
    target.unlink()
    if kind == "version-3":
        write_legacy_catalog(target, schema_version=3)
        return target, "has schema_version 3, and only legacy layouts 1 and 2 are known"
    if kind == "no-version":
        write_legacy_catalog(target)
        with sqlite3.connect(target) as conn:
            conn.execute("DELETE FROM schema_version")
        return target, "has no schema version"
    if kind == "columns":
        write_legacy_catalog(target, layout=1, schema_version=2)
        return target, "has a models table unlike layout 2's one (it has unknown dir_path"
    if kind == "v3-catalog":
        db = DatabaseManager(target)
        db.init_db()
        db.dispose()
        return target, "is a modelvault catalog, not a legacy one"
    raise AssertionError(kind)


BAD_FILES = [
    "missing",
    "folder",
    "folder-with-catalog",
    "empty",
    "text",
    "encrypted",
    "short-header",
    "truncated",
    "truncated-on-page",
    "damaged",
    "other-tables",
    "no-tables",
    "version-3",
    "no-version",
    "columns",
    "v3-catalog",
]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_anything_else_is_refused_in_one_sentence(tmp_path: Path, kind: str) -> None:
    path, says = _bad_file(kind, tmp_path)
    with pytest.raises(LegacyDatabaseError) as caught, open_legacy(path) as legacy:
        list(legacy.batches(100))
    message = str(caught.value)
    assert message.startswith(f"the legacy catalog {path.resolve()} ")
    assert says in message
    assert message.endswith(".")
    assert message.count(": ") == 1


def test_a_locked_file_is_refused_after_a_short_wait(tmp_path: Path) -> None:
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=quirky_rows()[:1])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: no reader gets in
    try:
        with pytest.raises(LegacyDatabaseError, match="is locked by another program: close"):
            open_legacy(path, busy_timeout_seconds=0.05)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with open_legacy(path) as legacy:  # and once it is free, it opens
        assert legacy.count_models() == 1


def test_the_engine_can_only_read(tmp_path: Path) -> None:
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=quirky_rows()[:1])
    with open_legacy(path) as legacy, legacy.engine.connect() as conn:
        assert "mode=ro" in str(legacy.engine.url)
        for sql in ("DELETE FROM models", "CREATE TABLE t (x)", "PRAGMA user_version = 7"):
            with pytest.raises(OperationalError, match=r"readonly|read-only|query_only"):
                conn.exec_driver_sql(sql)
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM models").fetchone() == (1,)
        assert check.execute("PRAGMA user_version").fetchone() == (0,)


def test_rows_left_in_the_wal_are_read_and_no_byte_changes(tmp_path: Path) -> None:
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3",
        rows=quirky_rows(),
        links=[(1, 2)],
        leave_wal=True,
        hash_not_null=False,
    )
    wal = Path(f"{path}-wal")
    before = path.read_bytes(), wal.read_bytes()
    assert len(before[1]) > 0
    assert not Path(f"{path}-shm").exists()
    rows, links = read_all(path)
    assert sorted(r.id for r in rows) == [1, 2, 5, 6, 9]  # they exist only in the WAL
    assert [link for batch in links for link in batch] == [(1, 2)]
    assert (path.read_bytes(), wal.read_bytes()) == before


def test_reading_while_the_legacy_app_writes(tmp_path: Path) -> None:
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=quirky_rows(), wal=True, hash_not_null=False
    )
    app = hold_open_in_wal(path)
    insert = (
        "INSERT INTO models (id, path, type, hash_hex, created_at) VALUES (?, ?, 'lora', '', 0)"
    )
    try:
        seen: list[int] = []
        with open_legacy(path) as legacy:
            for number, batch in enumerate(legacy.batches(2), start=1):
                seen.extend(row.id for row in batch.rows)
                if number > 1 and app.in_transaction:
                    app.execute("COMMIT")
                if number <= 3:  # the app writes, and holds its write lock while we read on
                    app.execute("BEGIN IMMEDIATE")
                    app.execute(insert, (100 + number, f"/m/new-{100 + number}"))
        assert sorted(seen[:5]) == [1, 2, 5, 6, 9]
        assert seen[5:] == [101, 102, 103]  # new rows come last, by id
    finally:
        app.close()


@pytest.mark.parametrize("hashed", [True, False], ids=["in-hash-order", "in-id-order"])
def test_the_legacy_app_can_write_whenever_the_importer_holds_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashed: bool
) -> None:
    """In rollback-journal mode a reader blocks every writer: no read may stay open
    while the caller works on a batch, links past the last model included."""
    monkeypatch.setattr(link_reads, "LINKS_PER_BATCH", 2)
    rows = [LegacyModel(i, f"/m/{i}", hash_hex=SHA if hashed else "") for i in range(1, 7)]
    links = [(i, t) for i in range(1, 7) for t in (1, 2)] + [(i, 3) for i in range(50, 58)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=links)
    app = sqlite3.connect(path, isolation_level=None, timeout=0)  # fails at once if locked
    try:
        seen = []
        with open_legacy(path) as legacy:
            for batch in legacy.batches(2):
                seen += batch.links
                app.execute("UPDATE tags SET color = color WHERE id = 1")  # a write
        assert sorted(seen) == sorted(links)
    finally:
        app.close()


def test_a_model_deleted_while_it_is_read_has_its_links_seen_once(tmp_path: Path) -> None:
    rows = [LegacyModel(i, f"/m/{i}") for i in range(1, 7)]
    links = [(i, 1) for i in range(1, 7)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=links)
    with open_legacy(path) as legacy:
        batches = legacy.batches(2)
        first = next(batches)  # no link names no model: the models come first
        with sqlite3.connect(path) as app:  # the legacy app, which leaves the links behind
            app.execute("DELETE FROM models WHERE id = 5")
        app.close()
        rest = list(batches)
    assert [r.id for r in first.rows] == [1, 2]
    assert [r.id for batch in rest for r in batch.rows] == [3, 4, 6]
    every_link = first.links + [link for batch in rest for link in batch.links]
    assert sorted(every_link) == sorted(links)  # each once: 5's in the batch it was listed in


def test_a_models_table_without_a_row_id_is_read_in_id_order(tmp_path: Path) -> None:
    rows = [LegacyModel(i, f"/m/{i}", hash_hex=sha_text) for i, sha_text in
            ((1, "f" * 64), (2, "0" * 64), (3, ""))]  # fmt: skip
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=[(2, 1), (9, 1)])
    with sqlite3.connect(path) as conn:  # hand-made: "id" a plain column, not the row id
        conn.execute("CREATE TABLE copied AS SELECT * FROM models")
        conn.execute("DROP TABLE models")
        conn.execute("ALTER TABLE copied RENAME TO models")
    conn.close()
    got_rows, got_links = read_all(path, size=2)
    assert [r.id for r in got_rows] == [1, 2, 3]
    assert [link for batch in got_links for link in batch] == [(2, 1), (9, 1)]


def test_the_writer_refuses_to_overwrite_and_unknown_layouts(tmp_path: Path) -> None:
    path = write_legacy_catalog(tmp_path / "l.sqlite3")
    with pytest.raises(FileExistsError):
        write_legacy_catalog(path)
    with pytest.raises(ValueError, match="layout 3"):
        write_legacy_catalog(tmp_path / "other.sqlite3", layout=3)


def test_the_writer_keeps_tags_colours_and_orphans_as_given(tmp_path: Path) -> None:
    tags = [*system_tags(), LegacyTag(8, "fav", "#F80", 1_700_000_000_000), LegacyTag(9, "x", "")]
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3",
        rows=[LegacyModel(1, "/m/a")],
        tags=tags,
        links=[(1, 8), (1, 77), (55, 9)],
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM tags WHERE id > 7").fetchall() == [
            (8, "fav", "#F80", 1_700_000_000_000),
            (9, "x", "", None),
        ]
        assert conn.execute("SELECT * FROM model_tags ORDER BY 1, 2").fetchall() == [
            (1, 8),
            (1, 77),
            (55, 9),
        ]


MODEL_COLUMNS_SQL = (
    "path TEXT NOT NULL UNIQUE, name TEXT, type TEXT NOT NULL, size_bytes INTEGER, "
    "hash_hex TEXT, created_at INTEGER NOT NULL, meta_json TEXT, extra_json TEXT"
)


def key_links_by_text(conn: sqlite3.Connection) -> None:
    """Make model_tags.model_id a TEXT column, as a hand-made file may have it."""
    conn.execute(
        "CREATE TABLE links (model_id TEXT NOT NULL, tag_id INTEGER NOT NULL, "
        "PRIMARY KEY (model_id, tag_id))"
    )
    conn.execute("INSERT INTO links SELECT * FROM model_tags")
    conn.execute("DROP TABLE model_tags")
    conn.execute("ALTER TABLE links RENAME TO model_tags")


@pytest.mark.parametrize(
    ("id_column", "table_options", "odd_id"),
    [
        ("id INTEGER PRIMARY KEY DESC", "", "x"),  # not the row id: any type goes in
        ("id INTEGER PRIMARY KEY DESC", "", 2.5),
        ("id INTEGER PRIMARY KEY", " WITHOUT ROWID", 7),
    ],
)
@pytest.mark.parametrize("links_per_batch", [1, 100_000], ids=["cut-for-links", "whole"])
def test_hand_made_tables_are_read_whole(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    id_column: str,
    table_options: str,
    odd_id: object,
    links_per_batch: int,
) -> None:
    """Every model and every link comes exactly once, whatever a hand-made file
    declared: ids that are not the row id (any type in them), links keyed by text;
    also when a batch is cut for its links (where ids of two types meet)."""
    monkeypatch.setattr(link_reads, "LINKS_PER_BATCH", links_per_batch)
    path = write_legacy_catalog(
        tmp_path / "l.sqlite3",
        rows=[LegacyModel(i, f"/m/{i}", hash_hex=sha_text) for i, sha_text in
              ((1, "f" * 64), (3, "0" * 64))],
        links=[(1, 1), (3, 2), (9, 1)],
    )  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE copied ({id_column}, {MODEL_COLUMNS_SQL}){table_options}")
        conn.execute("INSERT INTO copied SELECT * FROM models")
        conn.execute("DROP TABLE models")
        conn.execute("ALTER TABLE copied RENAME TO models")
        conn.execute(
            "INSERT INTO models VALUES (?, '/m/odd', NULL, 'other', NULL, '', 0, NULL, NULL)",
            (odd_id,),
        )
        key_links_by_text(conn)
    conn.close()
    got_rows, got_links = read_all(path, size=2)
    assert sorted(map(str, (r.id for r in got_rows))) == sorted(["1", "3", str(odd_id)])
    assert sorted((str(m), t) for batch in got_links for m, t in batch) == [
        ("1", 1), ("3", 2), ("9", 1)
    ]  # fmt: skip


def _vm_steps_per_read(path: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How much work each read of ``batches(size)`` does, in thousands of SQLite VM
    instructions: what decides how long the legacy app may wait for it."""
    steps = [0]
    per_read: list[int] = []

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    with open_legacy(path) as legacy:
        event.listen(
            legacy.engine, "connect", lambda conn, _: conn.set_progress_handler(count, 1000)
        )
        legacy.engine.dispose()  # the next connection gets the handler
        reading = legacy.reading

        @contextmanager
        def counted(**options: bool) -> Iterator[object]:
            steps[0] = 0
            with reading(**options) as cursor:
                yield cursor
            per_read.append(steps[0])

        monkeypatch.setattr(legacy, "reading", counted)
        for _batch in legacy.batches(size):
            pass
    return per_read


def test_no_read_grows_with_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read is a batch, an ordering chunk or a window of links: ten times the
    rows take ten times the reads, none of them longer (no sort or scan of it all)."""
    monkeypatch.setattr(link_reads, "LINKS_PER_BATCH", 300)
    most = []
    for count in (1_000, 10_000):
        rows = [
            LegacyModel(i, f"/m/{i}", hash_hex=hashlib.sha256(bytes(i)).hexdigest() * (i % 2))
            for i in range(1, count + 1)
        ]
        links = [(i, tag) for i in range(1, count + 1) for tag in (1, 2, 3)]
        links += [(i, 1) for i in range(count + 1, count + 50)]  # naming no model
        path = write_legacy_catalog(tmp_path / f"{count}.sqlite3", rows=rows, links=links)
        per_read = _vm_steps_per_read(path, 100, monkeypatch)
        assert len(per_read) > count // 100
        most.append(max(per_read))
    assert most[1] <= 2 * most[0], most


def test_a_model_deleted_after_its_id_was_read_has_its_links_seen_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a link names a model is decided by the ids read, not by the models
    there are when its window is read: a model deleted (its links left behind)
    before or after its batch has its links once, in the batch that listed it."""
    monkeypatch.setattr(link_reads, "LINKS_PER_BATCH", 2)  # several windows
    rows = [LegacyModel(i, f"/m/{i}") for i in range(10, 70, 10)]
    links = [(i, 1) for i in range(10, 70, 10)]
    links += [(i + 5, 2) for i in range(0, 70, 10)]  # between the models: no model
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=links)

    def delete(*ids: int) -> None:  # as the legacy app did, leaving the links behind
        with sqlite3.connect(path) as app:
            app.execute(f"DELETE FROM models WHERE id IN ({', '.join(map(str, ids))})")
        app.close()

    with open_legacy(path) as legacy:
        batches = legacy.batches(2)
        seen = [next(batches)]
        delete(40)  # before its batch
        while seen[-1].rows or len(seen) == 1:
            seen.append(next(batches))
        delete(50, 60)  # after their batch, before the windows of links of no model
        seen += list(batches)
    assert [r.id for batch in seen for r in batch.rows] == [10, 20, 30, 50, 60]
    assert seen[1].links == [(30, 1), (40, 1)]  # 40's with the batch that listed it
    every_link = [link for batch in seen for link in batch.links]
    assert sorted(every_link) == sorted(links)  # each once


def test_a_file_with_paths_not_unique_is_read_in_id_order(tmp_path: Path) -> None:
    rows = [LegacyModel(i, f"/m/{i}", hash_hex=f"{9 - i}" * 64) for i in range(1, 6)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=[(2, 1), (9, 1)])
    with sqlite3.connect(path) as conn:  # hand-made: the same table without UNIQUE(path)
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'models'").fetchone()[0]
        assert "UNIQUE" in sql
        conn.execute("ALTER TABLE models RENAME TO old")
        conn.execute(sql.replace("UNIQUE", ""))
        conn.execute("INSERT INTO models SELECT * FROM old")
        conn.execute("DROP TABLE old")
    conn.close()
    got_rows, got_links = read_all(path, size=2)
    assert [r.id for r in got_rows] == [1, 2, 3, 4, 5]  # in hash order: 5, 4, 3, 2, 1
    assert [link for batch in got_links for link in batch] == [(2, 1), (9, 1)]


@pytest.mark.parametrize(
    "ids",
    [[-(2**31), -1, 5, 6, 2**31 - 1], [-(2**63), 5, 2**31, 2**63 - 1]],
    ids=["in-hash-order", "beyond-32-bits-in-id-order"],
)
def test_ids_at_both_ends_of_their_range_are_read(tmp_path: Path, ids: list[int]) -> None:
    rows = [LegacyModel(i, f"/m/{i}", hash_hex=hashlib.sha256(str(i).encode()).hexdigest())
            for i in ids]  # fmt: skip
    links = [(i, 1) for i in ids] + [(0, 2)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=links)
    got_rows, got_links = read_all(path, size=2)
    assert sorted(r.id for r in got_rows) == ids
    assert sorted(link for batch in got_links for link in batch) == sorted(links)


def test_id_ranges_give_the_ids_above_a_bound() -> None:
    """The ids read, kept as ranges: what the windows of links of no model list."""
    rng = random.Random(7)
    for _ in range(200):
        ids = sorted(rng.sample(range(-50, 50), rng.randint(1, 60)))
        ranges = IdRanges()
        chunk = rng.randint(1, 10)
        for start in range(0, len(ids), chunk):
            ranges.extend(ids[start : start + chunk])
        assert ranges.last == ids[-1]
        for low in [float("-inf"), -51, rng.randint(-50, 50), rng.uniform(-50, 50)]:
            count = rng.randint(1, 70)
            assert ranges.after(low, count) == [i for i in ids if i > low][:count]


def test_links_keyed_by_text_come_once_however_text_and_numbers_sort(tmp_path: Path) -> None:
    """A hand-made model_tags with a TEXT model_id: as text '10' sorts before '2'
    while the models come in number order (1, 2, 10); each link still comes once."""
    rows = [LegacyModel(i, f"/m/{i}") for i in (1, 2, 10)]
    links = [(1, 1), (2, 1), (10, 1), (3, 2)]
    path = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, links=links)
    with sqlite3.connect(path) as conn:
        key_links_by_text(conn)
    conn.close()
    for size in (1, 2, 10):
        got_rows, got_links = read_all(path, size=size)
        assert [r.id for r in got_rows] == [1, 2, 10]
        every_link = [link for batch in got_links for link in batch]
        assert sorted(every_link) == sorted((str(m), t) for m, t in links)  # each once
