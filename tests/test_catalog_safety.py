"""Opening a catalog never writes to what is not one, and read-only means read-only."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from support import HEAD_REVISION, legacy_with_files

from modelvault import CatalogError, ConfigError, DatabaseManager, NotACatalogError
from modelvault.config import mask_password, parse_url
from modelvault.db.access import as_url


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` with a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


def _foreign(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO photos (name) VALUES ('beach')")
    conn.close()
    return path


@pytest.mark.parametrize("read_only", [False, True])
def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(
    tmp_path: Path, read_only: bool
) -> None:
    other = _foreign(tmp_path / "other.sqlite3")
    before = _fingerprint(tmp_path)
    db = DatabaseManager(other, read_only=read_only)
    with pytest.raises(NotACatalogError, match=r"other\.sqlite3 is not a modelvault catalog"):
        db.init_db()
    db.dispose()
    assert _fingerprint(tmp_path) == before  # no tables added, no -wal file made
    with sqlite3.connect(other) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_legacy_catalog_is_named_as_such(tmp_path: Path) -> None:
    legacy, _ = legacy_with_files(tmp_path, 2)
    before = _fingerprint(tmp_path)
    with pytest.raises(
        NotACatalogError, match=r"hikaze_mm\.sqlite3 is a legacy catalog: migrate it with"
    ):
        DatabaseManager(legacy).init_db()
    assert _fingerprint(tmp_path) == before


def test_read_only_can_look_but_not_write(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    writer = DatabaseManager(path)
    writer.init_db()
    writer.create_tag("style", "#ff0000")
    writer.dispose()
    with sqlite3.connect(path) as conn:  # our own catalog is in WAL mode, seen by all
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM tags").fetchone()[0] == 1
    conn.close()
    before = _fingerprint(tmp_path)

    reader = DatabaseManager(path, read_only=True)
    assert reader.init_db() == HEAD_REVISION
    assert [t.name for t, _ in reader.list_tags()] == ["style"]
    with pytest.raises(CatalogError, match="readonly database"):
        reader.create_tag("other")
    assert reader.display_url == f"sqlite:///{path}"
    reader.dispose()
    # SQLite may add the empty -wal and -shm files a WAL catalog is read with.
    assert _fingerprint(tmp_path)["c.sqlite3"] == before["c.sqlite3"]


def test_read_only_refuses_a_missing_or_empty_catalog_without_creating_it(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "none.sqlite3"
    with pytest.raises(CatalogError, match=r"there is no catalog at .*none\.sqlite3"):
        DatabaseManager(missing, read_only=True).init_db()
    assert not missing.exists()
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    with pytest.raises(
        CatalogError, match="is empty: make it a catalog with `modelvault init --db "
    ):
        DatabaseManager(empty, read_only=True).init_db()
    assert empty.stat().st_size == 0


def test_read_only_on_postgresql(postgres_database: str) -> None:
    from support.postgres import reset_postgres

    reset_postgres(postgres_database)
    writer = DatabaseManager(postgres_database)
    writer.init_db()
    writer.dispose()
    reader = DatabaseManager(postgres_database, read_only=True)
    assert reader.init_db() == HEAD_REVISION
    assert reader.catalog_counts()["models"] == 0
    with pytest.raises(CatalogError, match="read-only transaction"):
        reader.create_tag("style")
    with reader.engine.connect() as conn:
        assert conn.scalar(text("SHOW transaction_read_only")) == "on"
    reader.dispose()


def test_only_the_default_data_folder_is_created(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"folder .*nowhere does not exist"):
        DatabaseManager(tmp_path / "nowhere" / "c.sqlite3")
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(CatalogError):
        DatabaseManager(read_only=True).init_db()  # looking creates nothing
    assert not (tmp_path / "xdg-data").exists()
    DatabaseManager().init_db()
    assert (tmp_path / "xdg-data" / "modelvault" / "modelvault.sqlite3").is_file()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:SECRET@127.0.0.1:notaport/x",
        "postgres ql://user:SECRET@host/x",
        "user:SECRET@host/x",
        "user:SECRET@host:5432/x",
    ],
)
def test_a_malformed_url_is_one_sentence_without_the_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DatabaseManager(url)
    message = str(caught.value)
    assert "SECRET" not in message
    assert "user:***@" in message
    assert message.endswith(".")
    assert list(tmp_path.iterdir()) == []  # no file named after the password


def _file_of(target: str) -> str | None:
    return make_url(as_url(target)).database


def test_paths_and_urls_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert as_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert as_url("/data/c.sqlite3") == "sqlite:////data/c.sqlite3"
    assert _file_of("/data/a:b@c.sqlite3") == "/data/a:b@c.sqlite3"
    assert _file_of("/data/a b?c#d%20.sqlite3") == "/data/a b?c#d%20.sqlite3"  # quoted, not cut
    with pytest.raises(ConfigError, match="without its scheme"):
        as_url("localhost:5432/db")
    with pytest.raises(ConfigError, match="without its scheme"):
        as_url("user:pw@host/db")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "backup@2024").mkdir()  # a folder of that name: a path after all
    assert _file_of("backup@2024/c.sqlite3") == str(tmp_path / "backup@2024" / "c.sqlite3")
    # Windows paths are never URLs, whatever they hold (on Linux, a relative name).
    for windows in (r"D:\backup@2024\catalog.sqlite3", r"\\nas\share\u:p@c.sqlite3"):
        assert _file_of(windows) == str(tmp_path / windows)
    assert mask_password("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    assert mask_password("sqlite:////a/b") == "sqlite:////a/b"
    with pytest.raises(ConfigError, match=r"MODELVAULT_DB_URL='postgresql://u:\*\*\*@h:x/d'"):
        parse_url("postgresql://u:pw@h:x/d", source="MODELVAULT_DB_URL=")
