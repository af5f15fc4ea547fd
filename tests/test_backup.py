"""backup: a consistent copy while a writer commits, a folder of our own only, a
full disk leaving nothing, the automatic backups before a command writes (the
last few kept), and the export as a PostgreSQL catalog's backup."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support import run_modelvault
from support.keeping import fill_catalog, run_limited, sha_of

from modelvault import DatabaseManager, ModelVaultError
from modelvault.backup import KEEP_AUTOMATIC, MARKER, backup_before_writing, backup_catalog
from modelvault.exchange_import import import_catalog


def test_a_copy_made_while_a_writer_commits_is_consistent(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "c.sqlite3")
    db.init_db()
    fill_catalog(db)
    stop, written = threading.Event(), []

    def writer() -> None:  # each model comes with its tag in one transaction
        n = 1000
        while not stop.is_set():
            db.upsert_model({"sha256": sha_of(n), "path": f"/w/{n}", "tags": ["w"]})
            written.append(n)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:
            stop.wait(0.01)
        reports = [backup_catalog(db) for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    for report in reports:
        copy = sqlite3.connect(report.file)
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        untagged = copy.execute(
            "SELECT count(*) FROM models WHERE path LIKE '/w/%' AND sha256 NOT IN "
            "(SELECT model_sha256 FROM model_tags)"
        ).fetchone()[0]
        assert untagged == 0  # never half a transaction
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        copy.close()
        assert Path(report.file).parent == tmp_path / "backups"
    db.dispose()


def test_a_folder_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "c.sqlite3")
    db.init_db()
    fill_catalog(db)
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "cat.jpg").write_bytes(b"jpg")
    with pytest.raises(ModelVaultError, match="not modelvault backups"):
        backup_catalog(db, theirs)
    assert sorted(p.name for p in theirs.iterdir()) == ["cat.jpg"]
    a_file = tmp_path / "file.sqlite3"
    a_file.write_bytes(b"mine")
    with pytest.raises(ModelVaultError, match="not a folder"):
        backup_catalog(db, a_file)
    assert a_file.read_bytes() == b"mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    report = backup_catalog(db, empty)
    assert (empty / MARKER).is_file()
    assert Path(report.file).parent == empty
    db.dispose()


def test_automatic_backups_keep_the_last_few(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "c.sqlite3")
    db.init_db()
    assert backup_before_writing(db, "scan") is None  # nothing to lose yet
    fill_catalog(db)
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    made = [
        backup_catalog(db, before="scan", clock=lambda n=n: start + timedelta(hours=n)).file
        for n in range(KEEP_AUTOMATIC + 2)
    ]
    manual = backup_catalog(db).file
    left = {str(p) for p in (tmp_path / "backups").glob("*.sqlite3")}
    assert left == {*made[-KEEP_AUTOMATIC:], manual}
    assert not list((tmp_path / "backups").glob(".*"))
    db.dispose()


@pytest.mark.posix_only("a file size limit (RLIMIT_FSIZE) stands for a full disk")
def test_a_full_disk_leaves_no_backup(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "c.sqlite3")
    db.init_db()
    fill_catalog(db, 400)
    db.dispose()
    dest = tmp_path / "dest"
    result = run_limited(
        65_536, "backup", str(dest), "--db", str(tmp_path / "c.sqlite3"), cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1
    assert "cannot write the backup" in result.stderr
    assert sorted(p.name for p in dest.iterdir()) == [MARKER]


def test_postgresql_is_backed_up_as_its_export(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from support.postgres import reset_postgres

    url: str = request.getfixturevalue("postgres_database")
    reset_postgres(url)
    db = DatabaseManager(url)
    db.init_db()
    fill_catalog(db)
    report = backup_catalog(db, tmp_path / "pg-backups")
    assert report.kind == "export"
    assert report.file.endswith(".jsonl")
    reset_postgres(url)
    restored = DatabaseManager(url)
    restored.init_db()
    import_catalog(restored, report.file)
    assert restored.catalog_counts()["models"] == 5
    assert len(restored.deleted_records()) == 2  # the deleted log is part of it
    restored.dispose()
    db.dispose()


def test_scan_backs_up_first_and_says_where(tmp_path: Path) -> None:
    catalog = tmp_path / "c.sqlite3"
    db = DatabaseManager(catalog)
    db.init_db()
    fill_catalog(db)
    db.dispose()
    models = tmp_path / "models" / "loras"
    models.mkdir(parents=True)
    result = run_modelvault("scan", str(models), "--db", str(catalog), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backup: catalog copied to" in result.stderr
    assert len(list((tmp_path / "backups").glob("c-*-before-scan.sqlite3"))) == 1
    result = run_modelvault("scan", str(models), "--no-backup", "--db", str(catalog), cwd=tmp_path)
    assert result.returncode == 0
    assert "backup:" not in result.stderr
    assert len(list((tmp_path / "backups").glob("c-*-before-scan.sqlite3"))) == 1
