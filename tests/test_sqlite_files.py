"""A SQLite file given as the catalog: seen before it is opened, refused when it is
not ours, created whole, opened by a URI that works on every system, and kept out
of WAL mode on a network file system."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from support import HEAD_REVISION, as_nobody, legacy_with_files

from modelvault import (
    CatalogError,
    DatabaseManager,
    ModelVaultError,
    NotACatalogError,
    SchemaVersionError,
    Settings,
)
from modelvault.db import network
from modelvault.db.engine import set_journal_mode
from modelvault.db.network import (
    filesystem_of,
    journal_mode_for,
    mounts,
    network_filesystem,
    windows_network_drive,
)
from modelvault.db.sqlite_files import (
    APPLICATION_ID,
    create_marked_file,
    describe_application_id,
    look_at,
    sqlite_uri,
)
from modelvault.legacy.reader import open_legacy


def _files(folder: Path) -> dict[str, str]:
    """Every file in ``folder`` with a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


def _sqlite(path: Path, *statements: str, wal: bool = False) -> Path:
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    return path


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


# -- what a file is, seen without writing ----------------------------------------


def test_look_at_tells_what_a_file_is_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    assert not look_at(tmp_path / "none.sqlite3").exists
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    seen = look_at(empty)
    assert (seen.exists, seen.size, seen.blank) == (True, 0, True)
    app = _sqlite(tmp_path / "app.sqlite3", "PRAGMA application_id = 1196444487")
    assert look_at(app).application_id == 1196444487
    assert look_at(app).blank
    # Another app's WAL-mode file, closed cleanly (no -wal, no -shm): a plain
    # read-only open would create both; looking creates neither.
    wal = _sqlite(tmp_path / "photos.sqlite3", "CREATE TABLE photos (id INTEGER)", wal=True)
    before = _files(tmp_path)
    assert look_at(wal).tables == {"photos"}
    assert _files(tmp_path) == before


def test_look_at_reads_a_live_wal_file_with_its_newest_commits(tmp_path: Path) -> None:
    path = tmp_path / "live.sqlite3"
    app = sqlite3.connect(path)
    try:
        app.execute("PRAGMA journal_mode = WAL")
        app.execute("PRAGMA wal_autocheckpoint = 0")  # the table stays in the -wal
        app.execute("CREATE TABLE albums (id INTEGER)")
        app.commit()
        names = sorted(os.listdir(tmp_path))
        assert look_at(path).tables == {"albums"}
        assert sorted(os.listdir(tmp_path)) == names
    finally:
        app.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a catalog file"),
        (lambda p: p.mkdir(), "is a directory, not a catalog file"),
        (lambda p: p.write_bytes(b"x" * 4096), "is not a SQLite database"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00"), "is not a SQLite database"),
        (lambda p: os.symlink(p, p), "is a symbolic link loop"),
    ],
)
def test_look_at_refuses_what_cannot_be_a_catalog_without_opening_it(
    tmp_path: Path, make: object, message: str
) -> None:
    path = tmp_path / "given"
    make(path)  # type: ignore[operator]
    with pytest.raises(CatalogError, match=re.escape(message)):
        look_at(path)  # a FIFO would block an open() for ever
    with pytest.raises(ModelVaultError, match=re.escape(message)):
        DatabaseManager(path, read_only=True).init_db()


def test_a_device_and_a_name_too_long_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(NotACatalogError, match="/dev/null is a character device, not a catalog"):
        look_at("/dev/null")
    long_name = tmp_path / ("a" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))
    with pytest.raises(CatalogError, match="has a name longer than the file system allows"):
        look_at(long_name)


def test_the_application_id_is_named_with_its_letters() -> None:
    assert describe_application_id(0x47504B47) == "0x47504b47 ('GPKG')"
    assert describe_application_id(APPLICATION_ID) == "0x4d566c74 ('MVlt')"
    assert describe_application_id(-1) == "0xffffffff"


# -- which files become a catalog -----------------------------------------------


def test_a_new_catalog_is_created_whole_and_marked_as_ours(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db(adopt_empty=False)  # a file that is not there is no one's: it is created
    db.dispose()
    assert _pragma(path, "application_id") == APPLICATION_ID
    assert _pragma(path, "journal_mode") == "wal"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not create_marked_file(path)  # there already: left as it is
    assert _pragma(path, "application_id") == APPLICATION_ID


def test_processes_creating_one_catalog_at_once_all_open_it(tmp_path: Path) -> None:
    """A catalog being created is never seen as an empty file (which only init
    may adopt): it appears whole, marked as ours."""
    path = tmp_path / "c.sqlite3"
    start, errors = threading.Barrier(6), []

    def open_it() -> None:
        start.wait()
        try:
            db = DatabaseManager(path)
            db.init_db(adopt_empty=False)
            db.dispose()
        except Exception as exc:  # collected, then asserted on
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert DatabaseManager(path, read_only=True).init_db() == HEAD_REVISION


def test_a_look_at_a_catalog_this_process_has_open_keeps_its_locks(tmp_path: Path) -> None:
    """Closing a descriptor of a file drops every POSIX lock the process holds on
    it: another process closing the catalog would then take it for the last user
    and delete the -wal of a catalog still being written."""
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    with db.engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM models").scalar()
        assert look_at(path).revision == HEAD_REVISION
        other = (  # reads the file, so its close checks whether it is the last user
            "import sqlite3, sys; "
            "sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM sqlite_master').close()"
        )
        subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=60)
        assert Path(f"{path}-wal").exists()
        conn.exec_driver_sql("SELECT count(*) FROM models").scalar()
    db.dispose()
    assert look_at(path).application_id == APPLICATION_ID  # read by open() once closed


def test_the_switch_to_wal_waits_for_a_writer_as_the_busy_timeout_allows(tmp_path: Path) -> None:
    """SQLite refuses the switch at once while another connection holds the write
    lock (the promotion could deadlock, so no busy handler runs): it is waited for."""
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    db.dispose()
    _sqlite(path, "PRAGMA journal_mode = DELETE")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    errors: list[BaseException] = []

    def switch() -> None:
        try:
            set_journal_mode(DatabaseManager(path).engine, "WAL")
        except BaseException as exc:  # collected, then asserted on
            errors.append(exc)

    thread = threading.Thread(target=switch)
    thread.start()
    thread.join(0.5)  # refused at once without the wait: the thread would be over
    assert thread.is_alive()
    assert errors == []
    writer.execute("COMMIT")
    writer.close()
    thread.join(60)
    assert errors == []
    assert _pragma(path, "journal_mode") == "wal"


def test_the_switch_to_wal_gives_up_when_the_busy_timeout_passes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    DatabaseManager(path).init_db()
    _sqlite(path, "PRAGMA journal_mode = DELETE")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        engine = DatabaseManager(path, settings=Settings(sqlite_busy_timeout_seconds=0.2)).engine
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            set_journal_mode(engine, "WAL")
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["empty file", "no tables"])
def test_an_empty_file_is_made_a_catalog_only_when_asked(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "given.sqlite3"
    if kind == "empty file":
        path.touch()
    else:
        _sqlite(path, "PRAGMA user_version = 0", "VACUUM")
    before = _files(tmp_path)
    with pytest.raises(NotACatalogError, match=r"not a catalog: make it one with `modelvault init"):
        DatabaseManager(path).init_db(adopt_empty=False)
    with pytest.raises(
        CatalogError, match="is empty: make it a catalog with `modelvault init --db "
    ):
        DatabaseManager(path, read_only=True).init_db()
    assert _files(tmp_path) == before
    db = DatabaseManager(path)
    assert db.init_db(adopt_empty=True) == HEAD_REVISION
    db.dispose()
    assert _pragma(path, "application_id") == APPLICATION_ID


def test_another_programs_file_is_never_made_a_catalog(tmp_path: Path) -> None:
    path = _sqlite(tmp_path / "map.gpkg", "PRAGMA application_id = 1196444487")  # GeoPackage
    before = _files(tmp_path)
    for adopt in (False, True):  # not even by init
        with pytest.raises(NotACatalogError, match=r"is another program's SQLite database"):
            DatabaseManager(path).init_db(adopt_empty=adopt)
    with pytest.raises(NotACatalogError, match=r"application id 0x47504b47 \('GPKG'\)"):
        DatabaseManager(path, read_only=True).init_db()
    assert _files(tmp_path) == before


@pytest.mark.parametrize("read_only", [False, True])
def test_a_newer_catalog_is_refused_with_nothing_beside_it(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    db.dispose()
    _sqlite(path, "UPDATE alembic_version SET version_num = 'v99'")
    assert _pragma(path, "journal_mode") == "wal"  # ours, closed: no -wal, no -shm
    before = _files(tmp_path)
    with pytest.raises(SchemaVersionError, match="'v99', newer than this modelvault knows"):
        DatabaseManager(path, read_only=read_only).init_db()
    assert _files(tmp_path) == before


def test_an_earlier_catalog_gets_the_mark_when_next_opened_to_write(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    db.dispose()
    _sqlite(path, "PRAGMA application_id = 0")  # as catalogs were made before the mark
    reader = DatabaseManager(path, read_only=True)
    reader.init_db()
    reader.dispose()
    assert _pragma(path, "application_id") == 0  # looking never writes
    db = DatabaseManager(path)
    db.init_db(adopt_empty=False)  # it has our tables: it is ours
    db.dispose()
    assert _pragma(path, "application_id") == APPLICATION_ID


def test_a_folder_that_cannot_be_written_is_one_sentence() -> None:
    folder = Path(tempfile.mkdtemp(prefix="modelvault-locked-"))  # tmp_path is root's alone
    try:
        folder.chmod(0o555)
        running_as = as_nobody() if os.geteuid() == 0 else contextlib.nullcontext()
        with running_as, pytest.raises(CatalogError) as caught:
            DatabaseManager(folder / "c.sqlite3").init_db()
        assert str(caught.value) == (
            f"cannot create the catalog {folder / 'c.sqlite3'} (Permission denied): choose a "
            "folder you can write to, with --db or MODELVAULT_DB_PATH."
        )
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


# -- URIs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        ("/data/c.sqlite3", "file:///data/c.sqlite3"),
        ("//host/c.sqlite3", "file:////host/c.sqlite3"),  # POSIX allows a leading //
        ("/a b/c?#%.sqlite3", "file:///a%20b/c%3F%23%25.sqlite3"),
        ("/modèles/中.sqlite3", "file:///mod%C3%A8les/%E4%B8%AD.sqlite3"),
        ("/raw/\udcff.sqlite3", "file:///raw/%FF.sqlite3"),  # bytes that are not UTF-8
    ],
)
def test_posix_uris(path: str, uri: str) -> None:
    assert sqlite_uri(path, windows=False) == uri


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        (r"C:\ComfyUI\catalog.sqlite3", "file:///C:/ComfyUI/catalog.sqlite3"),
        ("c:/ComfyUI/catalog.sqlite3", "file:///c:/ComfyUI/catalog.sqlite3"),
        (r"\\nas\share\models\catalog.sqlite3", "file:////nas/share/models/catalog.sqlite3"),
        ("//nas/share/catalog.sqlite3", "file:////nas/share/catalog.sqlite3"),
        (r"\\?\C:\very\long\catalog.sqlite3", "file:///C:/very/long/catalog.sqlite3"),
        (r"\\?\UNC\nas\share\catalog.sqlite3", "file:////nas/share/catalog.sqlite3"),
        (r"D:\backup@2024\my #1\c.sqlite3", "file:///D:/backup%402024/my%20%231/c.sqlite3"),
    ],
)
def test_windows_uris_never_carry_an_authority(path: str, uri: str) -> None:
    # Windows' SQLite refuses file://nas/share/... ("invalid uri authority").
    assert sqlite_uri(path, windows=True) == uri
    assert uri.startswith("file:///")


def test_a_relative_windows_path_has_no_uri() -> None:
    with pytest.raises(ValueError, match="not an absolute Windows path"):
        sqlite_uri(r"models\c.sqlite3", windows=True)


def test_a_catalog_whose_name_means_something_in_a_uri_opens(tmp_path: Path) -> None:
    folder = tmp_path / "a b?c#d%20e"
    folder.mkdir()
    path = folder / "c%3F.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    db.create_tag("style")
    db.dispose()
    reader = DatabaseManager(path, read_only=True)  # opened by a mode=ro URI
    assert [t.name for t, _ in reader.list_tags()] == ["style"]
    reader.dispose()
    assert sorted(p.name for p in folder.iterdir())[0] == "c%3F.sqlite3"


# -- network file systems -----------------------------------------------------------

MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /mnt/nas rw,relatime - nfs4 nas:/export rw,vers=4.2
41 40 0:41 / /mnt/nas/local\040disk rw - ext4 /dev/sdb1 rw
42 27 0:42 / /mnt/smb rw - cifs //server/share rw
43 27 0:43 / /mnt/c rw - 9p drvfs rw
44 27 0:44 / /mnt/sshfs rw - fuse.sshfs me@host:/ rw
45 27 0:45 / /mnt/smb rw - ext4 /dev/sdc1 rw
"""


def test_mountinfo_is_read_as_linux_writes_it() -> None:
    assert ("/mnt/nas/local disk", "ext4") in mounts(MOUNTINFO)
    assert mounts("garbage\n\n") == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/me/catalog.sqlite3", None),
        ("/mnt/nas/models", "nfs4"),
        ("/mnt/nas", "nfs4"),
        ("/mnt/nasty/models", None),  # a prefix of the name is not the folder
        ("/mnt/nas/local disk/models", None),  # a local disk mounted inside the share
        ("/mnt/smb/models", None),  # a later mount on the same point hides the share
        ("/mnt/c/Users/me", "9p"),
        ("/mnt/sshfs/x", "fuse.sshfs"),
    ],
)
def test_network_file_systems_on_linux(path: str, expected: str | None) -> None:
    assert network_filesystem(path, platform="linux", mountinfo=MOUNTINFO) == expected


def test_filesystem_of_a_path_outside_every_mount() -> None:
    assert filesystem_of("/x", "") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (r"C:\ComfyUI\models", None),
        (r"Z:\models", "a network drive (Z:)"),
        (r"z:/models", "a network drive (Z:)"),
        (r"\\nas\share\models", "a network share"),
        ("//nas/share/models", "a network share"),
        (r"\\?\UNC\nas\share\models", "a network share"),
        (r"\\?\Z:\models", "a network drive (Z:)"),
        (r"models\relative", None),
    ],
)
def test_network_drives_and_shares_on_windows(path: str, expected: str | None) -> None:
    def drive_type(root: str) -> int:
        assert root.endswith("\\")
        return network.DRIVE_REMOTE if root.upper() == "Z:\\" else 3  # 3: a fixed disk

    assert windows_network_drive(path, drive_type) == expected
    assert network_filesystem(path, platform="win32", drive_type=drive_type) == expected


def test_other_systems_are_not_told_and_keep_wal() -> None:
    assert network_filesystem("/Volumes/nas", platform="darwin") is None
    assert journal_mode_for(None) == "WAL"
    assert journal_mode_for("nfs4") == "DELETE"


@pytest.fixture
def on_a_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as Linux would report it if it were an NFS mount (the system's
    answer is the one thing replaced)."""
    share = os.path.realpath(tmp_path)
    text = f"27 1 254:0 / / rw - ext4 /dev/vda rw\n40 27 0:40 / {share} rw - nfs4 nas:/x rw\n"
    monkeypatch.setattr(network, "_read_mountinfo", lambda: text)
    return tmp_path


def test_a_catalog_on_a_network_file_system_keeps_the_rollback_journal(on_a_share: Path) -> None:
    path = on_a_share / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    assert db.network_filesystem == "nfs4"
    db.create_tag("style")
    db.dispose()
    assert _pragma(path, "journal_mode") == "delete"
    assert not Path(f"{path}-wal").exists()


def test_the_command_line_says_why_and_points_to_postgresql(
    on_a_share: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelvault.cli import main

    assert main(["init", "--db", str(on_a_share / "c.sqlite3")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "the catalog is on nfs4, so it is kept in SQLite's rollback-journal mode" in err
    assert "use a PostgreSQL catalog" in err
    assert main(["status", "--db", str(on_a_share / "c.sqlite3")]) == 0
    assert capsys.readouterr().err == ""  # looking writes nothing, so there is nothing to say


def test_a_wal_catalog_moved_to_a_share_is_taken_out_of_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    db.dispose()
    assert _pragma(path, "journal_mode") == "wal"
    share = os.path.realpath(tmp_path)
    monkeypatch.setattr(network, "_read_mountinfo", lambda: f"1 1 0:1 / {share} rw - cifs x rw\n")
    db = DatabaseManager(path)
    db.init_db()
    db.dispose()
    assert _pragma(path, "journal_mode") == "delete"


def test_a_wal_legacy_file_on_a_share_is_read_from_a_private_copy(on_a_share: Path) -> None:
    legacy, _ = legacy_with_files(on_a_share, 2)
    app = sqlite3.connect(legacy)  # the legacy app runs: its -wal and -shm are there
    try:
        app.execute("PRAGMA journal_mode = WAL")
        app.execute("PRAGMA wal_autocheckpoint = 0")
        app.execute("UPDATE models SET name = 'newest' WHERE id = 1")
        app.commit()
        with open_legacy(legacy) as catalog:
            assert catalog.copy is not None  # its -shm is memory of the app's computer
            assert catalog.count_models() == 2
    finally:
        app.close()
