"""Stage 1 on legacy catalogs written the way the legacy app writes them
(LEGACY.md, "How the legacy app really wrote these rows"), on every backend."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from support import as_nobody, nobody_ids, running_as_root
from support.legacy import (
    empty_catalog,
    models_by_legacy_id,
    pending_by_legacy_id,
    sha,
    snapshot,
    tags_of,
    with_batch,
)

from modelvault import DatabaseManager, LegacyDatabaseError
from modelvault.legacy import link_reads
from modelvault.legacy.reader import open_legacy
from modelvault.migration import importer as importer_module
from modelvault.migration.importer import import_legacy_data
from modelvault.migration.sample import (
    LegacyModel,
    LegacyTag,
    rescanned,
    scanned,
    system_tags,
    write_legacy_catalog,
)
from modelvault.migration.worker import process_pending, retry_pending
from modelvault.normalize import parse_color

SCAN_MS = 1_724_000_000_000  # when the legacy app first saw the files
BEFORE_SCAN_NS = (SCAN_MS - 60_000) * 1_000_000
AFTER_SCAN_NS = (SCAN_MS + 60_000) * 1_000_000


def model_file(folder: Path, name: str, data: bytes, mtime_ns: int = BEFORE_SCAN_NS) -> Path:
    path = folder / "models" / "loras" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def write_over(path: Path, data: bytes, mtime_ns: int = AFTER_SCAN_NS) -> None:
    """The user (or a download tool) writes the file again after the scan."""
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- 1. a legacy hash counts only for a file that provably did not change ---------------


@pytest.mark.parametrize("layout", [2, 1])
def test_an_unchanged_file_keeps_its_legacy_hash(
    db: DatabaseManager, tmp_path: Path, layout: int
) -> None:
    file = model_file(tmp_path, "a.safetensors", b"a" * 100)
    row = scanned(1, file, "loras", created_at=SCAN_MS)
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", layout=layout, rows=[row])
    report = import_legacy_data(legacy, db)
    assert (report.imported, report.staged) == (1, 0)
    assert models_by_legacy_id(db)[1].sha256 == digest(b"a" * 100)


def test_rescan_after_an_append_is_hashed_again(db: DatabaseManager, tmp_path: Path) -> None:
    file = model_file(tmp_path, "a.safetensors", b"old bytes")
    row = scanned(1, file, "loras", created_at=SCAN_MS)
    with file.open("ab") as out:
        out.write(b" and more")
    os.utime(file, ns=(AFTER_SCAN_NS, AFTER_SCAN_NS))
    row = rescanned(row)  # the size is the file's now, the hash the old bytes'
    assert (row.size_bytes, row.hash_hex) == (18, digest(b"old bytes"))
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", rows=[row])

    report = import_legacy_data(legacy, db)
    assert (report.imported, report.staged) == (0, 1)
    staged = pending_by_legacy_id(db)[1]
    assert (staged.status, staged.sha256) == ("pending", None)
    assert staged.meta["legacy"]["hash_hex"] == digest(b"old bytes")
    assert "after the legacy app first saw it" in staged.meta["legacy"]["hash_ignored"]
    assert any(w["legacy_id"] == 1 and "staged to be hashed" in w["reason"]
               for w in report.warnings)  # fmt: skip
    process_pending(db, workers=1)
    assert db.get_model(digest(b"old bytes and more")) is not None
    assert db.get_model(digest(b"old bytes")) is None


@pytest.mark.parametrize("layout", [2, 1])
def test_a_same_size_overwrite_is_hashed_again(
    db: DatabaseManager, tmp_path: Path, layout: int
) -> None:
    file = model_file(tmp_path, "a.safetensors", b"AAAA")
    row = scanned(1, file, "loras", created_at=SCAN_MS)
    write_over(file, b"BBBB")
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", layout=layout, rows=[rescanned(row)])
    report = import_legacy_data(legacy, db)
    assert (report.imported, report.staged) == (0, 1)
    why = pending_by_legacy_id(db)[1].meta["legacy"]["hash_ignored"]
    if layout == 1:
        assert f"mtime_ns {BEFORE_SCAN_NS} in the legacy catalog, {AFTER_SCAN_NS} now" in why
    else:
        assert "after the legacy app first saw it" in why


def test_created_at_is_compared_in_whole_milliseconds(db: DatabaseManager, tmp_path: Path) -> None:
    last_in_ms = model_file(tmp_path, "a.bin", b"a", mtime_ns=SCAN_MS * 1_000_000 + 999_999)
    next_ms = model_file(tmp_path, "b.bin", b"b", mtime_ns=(SCAN_MS + 1) * 1_000_000)
    rows = [scanned(1, last_in_ms, "loras", created_at=SCAN_MS),
            scanned(2, next_ms, "loras", created_at=SCAN_MS)]  # fmt: skip
    import_legacy_data(write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows), db)
    assert sorted(models_by_legacy_id(db)) == [1]
    assert sorted(pending_by_legacy_id(db)) == [2]


def test_a_live_file_without_a_legacy_size_is_hashed_again(
    db: DatabaseManager, tmp_path: Path
) -> None:
    file = model_file(tmp_path, "a.bin", b"a")
    row = replace(scanned(1, file, "loras", created_at=SCAN_MS), size_bytes=None)
    import_legacy_data(write_legacy_catalog(tmp_path / "l.sqlite3", rows=[row]), db)
    assert "no size" in pending_by_legacy_id(db)[1].meta["legacy"]["hash_ignored"]


def test_a_layout1_live_file_without_mtime_ns_is_hashed_again(
    db: DatabaseManager, tmp_path: Path
) -> None:
    file = model_file(tmp_path, "a.bin", b"a")
    row = replace(scanned(1, file, "loras", created_at=SCAN_MS), mtime_ns=None)
    import_legacy_data(write_legacy_catalog(tmp_path / "l.sqlite3", layout=1, rows=[row]), db)
    why = pending_by_legacy_id(db)[1].meta["legacy"]["hash_ignored"]
    assert "mtime_ns None is not a time" in why


def test_a_copy_with_the_old_bytes_is_not_a_duplicate_of_a_changed_file(
    db: DatabaseManager, tmp_path: Path
) -> None:
    original = model_file(tmp_path, "original.safetensors", b"version 1")
    copy = tmp_path / "models" / "loras" / "copy.safetensors"
    shutil.copy2(original, copy)  # the old bytes, and the old mtime
    rows = [
        scanned(1, original, "loras", created_at=SCAN_MS, extra_json='{"description": "o"}'),
        scanned(2, copy, "loras", created_at=SCAN_MS + 5, extra_json='{"description": "c"}'),
    ]
    write_over(original, b"version 2")  # same size, other bytes; the re-scan keeps the hash
    rows[0] = rescanned(rows[0])  # fmt: skip
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)

    report = import_legacy_data(legacy, db)
    assert (report.imported, report.staged, report.duplicates) == (1, 1, 0)
    old = db.get_model(digest(b"version 1"))
    assert old is not None
    assert (old.path, old.meta["description"]) == (str(copy), "c")
    process_pending(db, workers=1)
    new = db.get_model(digest(b"version 2"))
    assert new is not None
    assert (new.path, new.meta["description"]) == (str(original), "o")
    assert pending_by_legacy_id(db) == {}


# -- 3. model types are ComfyUI's, tags stay as the user had them -----------------------


def test_types_are_comfyui_types_and_tags_stay(db: DatabaseManager, tmp_path: Path) -> None:
    rows = [
        LegacyModel(1, "/gone/models/loras/a.safetensors", "loras", hash_hex=sha("a")),
        LegacyModel(2, "/gone/models/checkpoints/b.ckpt", "checkpoints", hash_hex=sha("b")),
        LegacyModel(3, "/gone/models/upscale_models/c.pth", "upscale_models", hash_hex=sha("c")),
        LegacyModel(4, "/gone/models/clip/d.safetensors", "clip", hash_hex=sha("d")),
        LegacyModel(5, "/gone/models/my_stuff/e.bin", "my_stuff", hash_hex=sha("e")),
        LegacyModel(6, "/gone/models/vae/f.pt", "vae", hash_hex=sha("f")),
        # a file directly in a models root: the legacy app used its file name as type
        LegacyModel(7, "/gone/models/Loose.safetensors", "loose.safetensors", hash_hex=sha("g")),
        LegacyModel(8, "C:\\ComfyUI\\models\\h.ckpt", "h.ckpt", hash_hex=sha("h")),
    ]  # fmt: skip
    tags = [*system_tags(), LegacyTag(8, "loras"), LegacyTag(9, "checkpoints", "#00ff00")]
    legacy = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=rows, tags=tags, links=[(1, 8), (2, 9), (7, 7)]
    )
    import_legacy_data(legacy, db)
    models = models_by_legacy_id(db)
    assert {i: m.type for i, m in models.items()} == {
        1: "lora", 2: "checkpoint", 3: "upscale", 4: "text_encoder", 5: "my_stuff",
        6: "vae", 7: "other", 8: "other",
    }  # fmt: skip
    assert {i: m.meta["legacy"].get("type") for i, m in models.items()} == {
        1: "loras", 2: "checkpoints", 3: "upscale_models", 4: "clip", 5: None, 6: None,
        7: "loose.safetensors", 8: "h.ckpt",
    }  # fmt: skip
    assert tags_of(db, sha("a")) == ["loras"]
    assert tags_of(db, sha("b")) == ["checkpoints"]
    assert db.get_tag("checkpoints").color == "#00ff00"  # type: ignore[union-attr]


# -- 4. no byte of the legacy file is lost, no single cell stops the import ------------

NOT_UTF8 = bytes.fromhex("7b2261223a22ff227d")  # {"a":"\xff"}


def legacy_of(folder: Path, count: int) -> Path:
    rows = [LegacyModel(i, f"/gone/m{i}.safetensors", "loras", hash_hex=sha(str(i)),
                        extra_json=f'{{"n": {i}}}') for i in range(1, count + 1)]  # fmt: skip
    return write_legacy_catalog(folder / "l.sqlite3", rows=rows, links=[(i, 2) for i in (1, 45)])


def edit(legacy: Path, sql: str, *params: object) -> None:
    """Change the file the way a hand edit (or another program) could."""
    with closing(sqlite3.connect(legacy)) as conn, conn:
        conn.execute(sql, params)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_text_that_is_not_utf8_stops_nothing(db: DatabaseManager, tmp_path: Path) -> None:
    legacy = legacy_of(tmp_path, 50)
    edit(legacy, "UPDATE models SET extra_json = CAST(x'7b2261223a22ff227d' AS TEXT) WHERE id = 45")
    edit(legacy, "UPDATE models SET name = CAST(? AS TEXT) WHERE id = 46", b"caf\xe9.ckpt")
    report = import_legacy_data(legacy, with_batch(db, 10))
    assert (report.rows_read, report.imported) == (50, 50)
    models = models_by_legacy_id(db)
    assert models[45].meta["a"] == "\ufffd"
    assert models[45].meta["legacy"]["extra_json_bytes_b64"] == b64(NOT_UTF8)
    assert base64.b64decode(models[45].meta["legacy"]["extra_json_bytes_b64"]) == NOT_UTF8
    assert tags_of(db, sha("45")) == ["lora"]
    assert models[46].name == "caf\ufffd.ckpt"
    assert models[46].meta["legacy"]["name_bytes_b64"] == b64(b"caf\xe9.ckpt")
    assert models[44].meta == {"n": 44, "legacy": models[44].meta["legacy"]}
    assert "extra_json_bytes_b64" not in models[44].meta["legacy"]
    reasons = {(w["legacy_id"], w["reason"].split(";")[0]) for w in report.warnings}
    assert (45, "its extra_json is text that is not UTF-8") in reasons
    assert (46, "its name is text that is not UTF-8") in reasons
    again = import_legacy_data(legacy, with_batch(db, 10))
    assert again.already_present == 50


def test_blob_values_keep_their_bytes(db: DatabaseManager, tmp_path: Path) -> None:
    legacy = legacy_of(tmp_path, 3)
    edit(legacy, "UPDATE models SET extra_json = ? WHERE id = 2", b'{"a": 1}')
    edit(legacy, "UPDATE models SET meta_json = ? WHERE id = 3", b"\x00\xff\x10binary")
    report = import_legacy_data(legacy, db)
    assert report.imported == 3
    models = models_by_legacy_id(db)
    assert models[2].meta["a"] == 1
    assert models[2].meta["legacy"]["extra_json_bytes_b64"] == b64(b'{"a": 1}')
    assert models[3].meta["legacy"]["meta_json_bytes_b64"] == b64(b"\x00\xff\x10binary")
    assert (3, "its meta_json is a BLOB") in {
        (w["legacy_id"], w["reason"].split(";")[0]) for w in report.warnings
    }


def test_a_staged_row_with_such_bytes_is_finished_by_the_worker(
    db: DatabaseManager, tmp_path: Path
) -> None:
    files = [model_file(tmp_path, f"{i}.bin", b"data %d" % i) for i in range(3)]
    rows = [LegacyModel(i + 1, str(f), "loras") for i, f in enumerate(files)]
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    edit(legacy, "UPDATE models SET extra_json = CAST(x'7b2261223a22ff227d' AS TEXT) WHERE id = 2")
    assert import_legacy_data(legacy, db).staged == 3
    assert process_pending(db, workers=1).imported == 3
    model = db.get_model(digest(b"data 1"))
    assert model is not None
    assert model.meta["legacy"]["extra_json_bytes_b64"] == b64(NOT_UTF8)


@pytest.mark.parametrize("column", ["extra_json", "meta_json"])
def test_json_too_deep_to_write_back_is_kept_as_text(
    db: DatabaseManager, tmp_path: Path, column: str
) -> None:
    legacy = legacy_of(tmp_path, 5)
    # A fresh interpreter reads this (json.loads), but cannot write it back nested
    # in a model's meta, nor read it in the deeper stack of a worker.
    deep = '{"a": ' + "[" * 985 + "]" * 985 + "}"
    shallow = '{"a": ' + "[" * 150 + "]" * 150 + "}"
    edit(legacy, f"UPDATE models SET {column} = ? WHERE id = 3", deep)
    edit(legacy, f"UPDATE models SET {column} = ? WHERE id = 4", shallow)
    report = import_legacy_data(legacy, with_batch(db, 2))
    assert (report.rows_read, report.imported) == (5, 5)
    models = models_by_legacy_id(db)
    assert models[3].meta["legacy"][f"{column}_raw"] == deep
    assert "a" not in models[3].meta
    assert any(w["legacy_id"] == 3 and f"{column} is nested deeper than" in w["reason"]
               for w in report.warnings)  # fmt: skip
    read = models[4].meta if column == "extra_json" else models[4].meta["legacy"]["meta_json"]
    assert json.dumps(read["a"]) == "[" * 150 + "]" * 150


# -- 5. the legacy file is checked first, and read without leaving anything beside it ---


def damaged_legacy(folder: Path) -> Path:
    """A legacy file whose pages in the middle were overwritten (header intact)."""
    rows = [
        LegacyModel(
            i,
            f"/gone/{i:05d}.bin",
            "loras",
            hash_hex=sha(str(i)),
            extra_json=json.dumps({"description": "x" * 200}),
        )
        for i in range(1, 2001)
    ]
    folder.mkdir()
    legacy = write_legacy_catalog(folder / "hikaze_mm.sqlite3", rows=rows)
    page_size, pages = 4096, legacy.stat().st_size // 4096
    assert pages > 100
    with legacy.open("r+b") as out:
        out.seek(page_size * (pages // 2))
        out.write(b"\x55" * page_size * 4)
    return legacy


def test_a_damaged_file_is_refused_before_anything_is_written(db_url: str, tmp_path: Path) -> None:
    legacy = damaged_legacy(tmp_path / "legacy")
    db = DatabaseManager(db_url)
    try:
        with pytest.raises(LegacyDatabaseError, match="is damaged") as caught:
            import_legacy_data(legacy, db)
        assert str(caught.value).startswith(f"the legacy catalog {legacy} is damaged (")
        assert str(caught.value).endswith(": restore it from a backup.")
        assert inspect(db.engine).get_table_names() == []
    finally:
        db.dispose()


def test_the_command_line_says_so_in_one_line_with_exit_2(tmp_path: Path) -> None:
    legacy = damaged_legacy(tmp_path / "legacy")
    catalog = tmp_path / "new" / "catalog.sqlite3"
    result = subprocess.run(
        [sys.executable, "-m", "modelvault", "import", str(legacy), "--db", str(catalog)],
        capture_output=True, text=True, check=False, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert "is damaged" in result.stderr
    assert not (tmp_path / "new").exists()


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("leave_wal", [True, False], ids=["rows-in-wal", "checkpointed"])
def test_a_wal_file_leaves_nothing_beside_it(
    db: DatabaseManager, tmp_path: Path, leave_wal: bool
) -> None:
    folder = tmp_path / "legacy"
    folder.mkdir()
    rows = [LegacyModel(i, f"/gone/{i}.bin", "loras", hash_hex=sha(str(i))) for i in (1, 2, 3)]
    legacy = write_legacy_catalog(
        folder / "hikaze_mm.sqlite3", rows=rows, wal=True, leave_wal=leave_wal
    )
    before = listing(folder)
    assert sorted(before) == ["hikaze_mm.sqlite3", "hikaze_mm.sqlite3-wal"][: 1 + leave_wal]
    assert import_legacy_data(legacy, db).imported == 3
    assert listing(folder) == before


@pytest.mark.posix_only("acts as the user nobody, with POSIX file modes")
def test_a_wal_file_in_a_folder_the_user_cannot_write_is_read_whole(db_url: str) -> None:
    if not running_as_root():
        pytest.skip("needs root, to become the user nobody")
    # Under a folder of its own: pytest's tmp_path is closed to other users.
    shared = Path(tempfile.mkdtemp(prefix="modelvault-test-"))
    try:
        shared.chmod(0o755)
        folder, out = shared / "legacy", shared / "out"
        folder.mkdir()
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        rows = [LegacyModel(i, f"/gone/{i}.bin", "loras", hash_hex=sha(str(i))) for i in (1, 2)]
        legacy = write_legacy_catalog(folder / "hikaze_mm.sqlite3", rows=rows, leave_wal=True)
        before = listing(folder)
        folder.chmod(0o555)
        postgres = db_url.startswith("postgresql")
        url = db_url if postgres else str(out / "catalog.sqlite3")
        # Load every module while root can read them all (the interpreter is in /root).
        warm_up = DatabaseManager(db_url if postgres else str(out / "warm-up.sqlite3"))
        import_legacy_data(legacy, warm_up).to_dict()
        warm_up.dispose()
        catalog = DatabaseManager(url)
        # Created as root: the migration scripts may sit where nobody cannot read
        # them (a virtual environment in a private folder); then handed to nobody.
        catalog.init_db()
        for made in out.iterdir():
            os.chown(made, *nobody_ids())
        with as_nobody():
            with pytest.raises(PermissionError):
                (folder / "probe").touch()  # the folder really is not writable
            report = import_legacy_data(legacy, catalog)
        assert report.accounted == report.rows_read == 2
        assert catalog.get_model(sha("1")) is not None  # the rows were only in the -wal
        assert catalog.get_model(sha("2")) is not None
        assert listing(folder) == before
        catalog.dispose()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# -- 7. CSS colours, and relative paths ---------------------------------------------------


def test_css_colours_are_read_and_what_they_lose_is_kept(
    db: DatabaseManager, tmp_path: Path
) -> None:
    colours = {
        8: ("rgb(255, 0, 0)", "#ff0000", True),
        9: ("hsl(120, 100%, 50%)", "#00ff00", False),
        10: ("#ff000080", "#ff0000", False),
        11: ("rgba(0 0 255 / 50%)", "#0000ff", False),
        12: ("#0f08", "#00ff00", False),
        13: ("RGB(100%, 50%, 0%)", "#ff8000", False),
        14: ("hsla(0.5turn, 100%, 25%, 1)", "#008080", False),
    }
    tags = [*system_tags(), *(LegacyTag(i, f"t{i}", raw) for i, (raw, _, _) in colours.items())]
    rows = [LegacyModel(1, "/gone/a.bin", "loras", hash_hex=sha("a"))]
    legacy = write_legacy_catalog(
        tmp_path / "l.sqlite3", rows=rows, tags=tags, links=[(1, i) for i in colours]
    )
    report = import_legacy_data(legacy, db)
    assert report.unreadable_colors == []
    for i, (_, colour, _) in colours.items():
        assert db.get_tag(f"t{i}").color == colour  # type: ignore[union-attr]
    kept = models_by_legacy_id(db)[1].meta["legacy"]["tag_colors"]
    assert kept == {f"t{i}": raw for i, (raw, _, exact) in colours.items() if not exact}


@pytest.mark.parametrize(
    ("value", "colour"),
    [
        ("rgb(255,0,0)", "#ff0000"),
        ("rgb(255 0 0)", "#ff0000"),
        ("rgba(255, 0, 0, 0.25)", "#ff0000"),
        ("rgb(0 128 255 / 0.5)", "#0080ff"),
        ("rgb(300, -5, 12.4)", "#ff000c"),  # clamped and rounded, as CSS does
        ("hsl(0, 100%, 50%)", "#ff0000"),
        ("hsl(240deg 100% 50%)", "#0000ff"),
        ("hsl(3.1416rad, 100%, 50%)", "#00ffff"),
        ("hsl(200grad 100% 50% / 10%)", "#00ffff"),
        ("#ABCDEF80", "#abcdef"),
        ("#abcd", "#aabbcc"),
        ("abc", "#aabbcc"),
        ("rgb(1, 2)", None),
        ("rgb(1 2 3, 4)", None),
        ("rgb(1, 2, 3 / 4)", None),
        ("rgb(1deg, 2, 3)", None),
        ("hsl(10%, 1%, 1%)", None),
        ("rgb(a, b, c)", None),
        ("abcd", None),  # without "#", 4 or 8 digits may be a word
        ("#abcde", None),
    ],
)
def test_parse_color_reads_css(value: str, colour: str | None) -> None:
    assert parse_color(value) == colour


@pytest.mark.parametrize("path", ["models/loras/a.safetensors", "a.bin", "C:a.bin", "\\a.bin"])
def test_a_relative_path_is_never_read_from_the_current_folder(
    db: DatabaseManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    here = tmp_path / "cwd"
    (here / "models" / "loras").mkdir(parents=True)
    (here / path).write_bytes(b"must not be read")
    os.utime(here / path, ns=(BEFORE_SCAN_NS, BEFORE_SCAN_NS))
    monkeypatch.chdir(here)
    (here / "a2.bin").write_bytes(b"2")
    rows = [LegacyModel(1, path, "loras", size_bytes=16, hash_hex=sha("x")),
            scanned(2, here / "a2.bin", "loras")]  # fmt: skip
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows)
    report = import_legacy_data(legacy, db)
    assert (report.failed, report.accounted, report.rows_read) == (1, 2, 2)
    failed = pending_by_legacy_id(db)[1]
    assert (failed.status, failed.path, failed.sha256) == ("failed", path, None)
    assert "relative" in (failed.last_error or "")
    assert failed.meta["legacy"]["hash_hex"] == sha("x")
    assert db.get_model(sha("x")) is None
    assert import_legacy_data(legacy, db).already_present == 2  # a re-run finds it staged
    retry_pending(db)
    assert process_pending(db, workers=1).failed == 1
    assert db.get_model(digest(b"must not be read")) is None
    assert "relative" in (pending_by_legacy_id(db)[1].last_error or "")


# -- 6. memory stays flat: a batch holds a bounded number of links -----------------------


def many_links(folder: Path) -> Path:
    """Models with 0 to 12 tags, orphan links between and after them."""
    tags = [*system_tags(), *(LegacyTag(i, f"tag {i}") for i in range(8, 30))]
    rows = [LegacyModel(i, f"/gone/{i}.bin", "loras", hash_hex=sha(str(i)))
            for i in (*range(1, 20), *range(40, 45))]  # fmt: skip
    links = [(row.id, tag) for row in rows for tag in range(8, 8 + row.id % 13)]
    links += [(30, 9), (31, 9), (31, 10), (99, 8), (100, 8), (100, 9)]  # orphans
    return write_legacy_catalog(folder / "l.sqlite3", rows=rows, tags=tags, links=links)


def test_batches_hold_a_bounded_number_of_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy_path = many_links(tmp_path)
    monkeypatch.setattr(link_reads, "LINKS_PER_BATCH", 7)
    seen_rows, seen_links = [], []
    with open_legacy(legacy_path) as legacy:
        for batch in legacy.batches(5):
            assert len(batch.links) <= 7 or len(batch.rows) == 1
            seen_rows += [row.id for row in batch.rows]
            seen_links += batch.links
    with closing(sqlite3.connect(legacy_path)) as conn:
        every_link = conn.execute("SELECT model_id, tag_id FROM model_tags").fetchall()
        every_row = [i for (i,) in conn.execute("SELECT id FROM models ORDER BY id")]
    assert sorted(seen_rows) == every_row  # each once
    assert sorted(seen_links) == sorted(every_link)  # each once


def test_the_link_budget_changes_nothing_in_the_catalog(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = many_links(tmp_path)
    db = DatabaseManager(db_url)
    first = import_legacy_data(legacy, with_batch(db, 5))
    whole = snapshot(db)
    empty_catalog(db)
    monkeypatch.setattr(link_reads, "LINKS_PER_BATCH", 7)
    second = import_legacy_data(legacy, with_batch(db, 5))
    assert snapshot(db) == whole
    assert second.orphan_links_skipped == first.orphan_links_skipped == 6
    assert tags_of(db, sha("12")) == sorted(f"tag {i}" for i in range(8, 20))
    db.dispose()


COLOURS = ["#f00", "blurple", None, "#ff000080", "#00f"]


def test_small_tag_caches_change_nothing_in_the_catalog(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tags registered a few at a time and looked up again batch by batch give the
    very catalog and report that one pass over all of them gives."""
    tags = [
        *system_tags(),
        *(LegacyTag(i, f"Tag {i % 9}" + " " * (i // 9), COLOURS[i % 5]) for i in range(8, 40)),
    ]
    rows = [LegacyModel(i, f"/gone/{i}.bin", "loras", hash_hex=sha(str(i))) for i in range(1, 30)]
    links = [(i, t) for i in range(1, 30) for t in range(8 + i % 5, 40, 3)] + [(3, 77)]
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, tags=tags, links=links)
    db = DatabaseManager(db_url)
    first = import_legacy_data(legacy, with_batch(db, 4)).to_dict()
    whole = snapshot(db)
    kept = {i: m.meta["legacy"].get("tag_colors") for i, m in models_by_legacy_id(db).items()}
    empty_catalog(db)
    monkeypatch.setattr(importer_module, "TAG_CHUNK", 3)
    monkeypatch.setattr(importer_module, "TAG_CACHE", 5)
    second = import_legacy_data(legacy, with_batch(db, 4)).to_dict()
    assert snapshot(db) == whole
    assert {
        i: m.meta["legacy"].get("tag_colors") for i, m in models_by_legacy_id(db).items()
    } == kept
    for key in ("tags_created", "unreadable_colors", "color_clashes", "orphan_links_skipped"):
        assert second[key] == first[key], key
    assert any(kept.values())
    assert first["color_clashes"]
    assert first["unreadable_colors"]
    db.dispose()


def test_tag_names_and_colours_keep_their_bytes(db: DatabaseManager, tmp_path: Path) -> None:
    tags = [*system_tags(), LegacyTag(8, "placeholder"), LegacyTag(9, "blue", "#00f")]
    rows = [LegacyModel(1, "/gone/a.bin", "loras", hash_hex=sha("a"))]
    legacy = write_legacy_catalog(tmp_path / "l.sqlite3", rows=rows, tags=tags,
                                  links=[(1, 8), (1, 9)])  # fmt: skip
    edit(legacy, "UPDATE tags SET name = CAST(? AS TEXT) WHERE id = 8", b"caf\xe9")
    edit(legacy, "UPDATE tags SET color = ? WHERE id = 9", b"#00f")
    report = import_legacy_data(legacy, db)
    assert tags_of(db, sha("a")) == ["blue", "caf\ufffd"]
    kept = models_by_legacy_id(db)[1].meta["legacy"]["tag_bytes_b64"]
    assert kept == {"8": {"name": b64(b"caf\xe9")}, "9": {"color": b64(b"#00f")}}
    assert {w["legacy_id"] for w in report.warnings if w["table"] == "tags"} >= {8, 9}


def test_a_row_the_catalog_cannot_take_fails_alone(db: DatabaseManager, tmp_path: Path) -> None:
    files = [model_file(tmp_path, f"{i}.bin", b"data %d" % i) for i in range(3)]
    legacy = write_legacy_catalog(
        tmp_path / "l.sqlite3",
        rows=[LegacyModel(i + 1, str(f), "loras") for i, f in enumerate(files)],
    )
    assert import_legacy_data(legacy, db).staged == 3
    # A tag name no driver can encode (a lone surrogate), as a hand edit can leave it.
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE pending_import SET tags = :tags WHERE legacy_id = 2"),
            {"tags": '[{"name": "bad \\ud800", "color": null}]'},
        )
    report = process_pending(db, workers=1)
    assert (report.imported, report.failed) == (2, 1)
    failed = pending_by_legacy_id(db)[2]
    assert failed.status == "failed"
    assert "cannot be catalogued" in (failed.last_error or "")
    assert db.get_model(digest(b"data 0")) is not None
    assert db.get_model(digest(b"data 2")) is not None
