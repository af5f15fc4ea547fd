"""A catalogued file is present, gone, or out of reach: "gone" only when the file
system says so, never for a folder that cannot be read or a share that is away."""

from __future__ import annotations

import errno
import json
import ntpath
import posixpath
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import shared_folder, unreadable

from modelvault import DatabaseManager
from modelvault.cli import main
from modelvault.presence import (
    GONE,
    PRESENT,
    TOO_LONG,
    FileState,
    NotFound,
    after_error,
    after_not_found,
    check_file,
    path_anchor,
    path_is_live,
    state_after,
    too_long,
)

KEPT, LOST, HERE = "aa" * 32, "bb" * 32, "cc" * 32


def lookup_error(code: int, winerror: int | None = None) -> OSError:
    exc = OSError(code, "an error", "the path")
    if winerror is not None:
        exc.winerror = winerror  # type: ignore[attr-defined]  # as Windows' OSError has
    return exc


def test_a_real_file_a_dangling_link_and_nothing(tmp_path: Path) -> None:
    real = tmp_path / "model.safetensors"
    real.write_bytes(b"x")
    assert check_file(str(real)) == PRESENT
    assert check_file(str(tmp_path / "never.safetensors")) == GONE
    assert check_file(str(real / "below-a-file")) == GONE  # ENOTDIR: a folder became a file
    assert check_file("/no\0where") == GONE  # no such name can exist


@pytest.mark.parametrize(
    "code", [errno.EACCES, errno.EPERM, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ELOOP]
)
def test_any_other_error_is_unreachable_with_its_reason(code: int) -> None:
    found = after_error("/mnt/nas/loras/a.safetensors", lookup_error(code))
    assert found.state is FileState.UNREACHABLE
    assert found.reason == "an error"
    assert found.exists is None


def test_a_windows_share_or_drive_that_is_away_is_unreachable() -> None:
    there = {"C:\\"}
    for path, anchor in (
        ("Z:\\models\\a.safetensors", "Z:\\"),
        ("\\\\nas\\share\\models\\a.safetensors", "\\\\nas\\share\\"),
        ("c:/ComfyUI/models/a.safetensors", "c:\\"),
    ):
        assert path_anchor(path, ntpath) == anchor
        found = after_error(
            path, lookup_error(errno.ENOENT), pathmod=ntpath, exists=there.__contains__
        )
        assert found.state is FileState.UNREACHABLE
        assert found.reason == f"{anchor} is not there"
    on_c = after_error(
        "C:\\models\\a.safetensors",
        lookup_error(errno.ENOENT),
        pathmod=ntpath,
        exists=there.__contains__,
    )
    assert on_c == GONE  # the drive is there: the file is gone
    assert path_anchor("/mnt/nas/a.safetensors", posixpath) is None  # "/" is always there
    # The network path is not found, the device is not ready, the name too long:
    # Windows says so in winerror, whatever errno Python makes of it.
    for winerror in (53, 67, 21, 206):
        found = after_error(
            "C:\\a", lookup_error(errno.ENOENT, winerror), pathmod=ntpath, exists=there.__contains__
        )
        assert found.state is FileState.UNREACHABLE


# Windows error numbers (winerror.h): what Python gives errno ENOENT for.
ERROR_FILE_NOT_FOUND, ERROR_PATH_NOT_FOUND, ERROR_INVALID_DRIVE = 2, 3, 15
ERROR_BAD_NETPATH, ERROR_BAD_NET_NAME, ERROR_FILENAME_EXCED_RANGE = 53, 67, 206


@pytest.mark.parametrize(
    ("code", "winerror", "state"),
    [
        (errno.ENOENT, None, FileState.GONE),
        (errno.ENOTDIR, None, FileState.GONE),
        (errno.ENOENT, ERROR_FILE_NOT_FOUND, FileState.GONE),
        (errno.ENOENT, ERROR_PATH_NOT_FOUND, FileState.GONE),  # unless its root is away
        (errno.ENOENT, ERROR_INVALID_DRIVE, FileState.UNREACHABLE),
        (errno.ENOENT, ERROR_BAD_NETPATH, FileState.UNREACHABLE),
        (errno.ENOENT, ERROR_BAD_NET_NAME, FileState.UNREACHABLE),
        (errno.ENOENT, ERROR_FILENAME_EXCED_RANGE, FileState.UNREACHABLE),
        (errno.ENAMETOOLONG, None, FileState.UNREACHABLE),
        (errno.EACCES, None, FileState.UNREACHABLE),
    ],
)
def test_what_an_error_alone_says_of_a_file(
    code: int, winerror: int | None, state: FileState
) -> None:
    assert state_after(code, winerror) is state


def test_a_path_too_long_is_said_so_never_gone() -> None:
    assert too_long(errno.ENAMETOOLONG)
    assert too_long(errno.ENOENT, ERROR_FILENAME_EXCED_RANGE)
    assert not too_long(errno.ENOENT, ERROR_PATH_NOT_FOUND)
    assert not too_long(errno.ENOENT)
    windows = after_error(
        "C:\\" + "a\\" * 200 + "model.safetensors",
        lookup_error(errno.ENOENT, ERROR_FILENAME_EXCED_RANGE),
        pathmod=ntpath,
        exists=lambda _: True,
    )
    assert windows == after_error("/x", lookup_error(errno.ENAMETOOLONG))
    assert (windows.state, windows.reason) == (FileState.UNREACHABLE, TOO_LONG)


@pytest.mark.posix_only("the system's own ENAMETOOLONG")
def test_a_real_path_too_long_is_said_so() -> None:
    real = check_file("/" + "a" * 5000)
    assert (real.state, real.reason) == (FileState.UNREACHABLE, TOO_LONG)


def test_what_a_worker_makes_of_a_file_it_did_not_find() -> None:
    there = {"C:\\"}.__contains__
    on_z = "Z:\\models\\loras\\a.safetensors"

    def outcome(path: str, exc: OSError) -> tuple[NotFound, str]:
        return after_not_found(path, exc, pathmod=ntpath, exists=there)

    # The drive (or share) is not there: tried again after a back-off, not "missing".
    kind, message = outcome(on_z, lookup_error(errno.ENOENT, ERROR_PATH_NOT_FOUND))
    assert kind is NotFound.AWAY
    assert message == (
        f"{on_z} cannot be reached now (Z:\\ is not there); it is not called missing, "
        "and is tried again later"
    )
    unc = "\\\\nas\\share\\a.safetensors"
    assert outcome(unc, lookup_error(errno.ENOENT, ERROR_BAD_NET_NAME))[0] is NotFound.AWAY
    assert outcome(unc, lookup_error(errno.ENOENT))[0] is NotFound.AWAY  # its root is away
    # On a drive that is there, the file is gone.
    on_c = "C:\\models\\a.safetensors"
    exc = FileNotFoundError(errno.ENOENT, "not found", on_c)
    assert outcome(on_c, exc) == (NotFound.GONE, f"file not found: {on_c}")
    # Too long: failed at once with one sentence, on Windows and elsewhere.
    long = "C:\\" + "x" * 300
    kind, message = outcome(long, lookup_error(errno.ENOENT, ERROR_FILENAME_EXCED_RANGE))
    assert kind is NotFound.TOO_LONG
    assert message.startswith(f"path too long: {long} (303 characters), or a name in it,")
    assert message.count(".") == 1  # one sentence
    assert message.endswith("turn on long path support.")
    assert after_not_found("/x", lookup_error(errno.ENAMETOOLONG))[0] is NotFound.TOO_LONG


@pytest.mark.posix_only("a symbolic link, and ENAMETOOLONG")
def test_a_model_is_moved_only_from_a_file_that_is_gone(tmp_path: Path) -> None:
    real = tmp_path / "model.safetensors"
    real.write_bytes(b"x")
    (tmp_path / "dangling.safetensors").symlink_to(tmp_path / "nowhere")
    assert path_is_live(str(real))
    assert not path_is_live(str(tmp_path / "gone.safetensors"))
    assert not path_is_live(str(tmp_path / "dangling.safetensors"))  # a link to nothing
    assert not path_is_live("/no\0where")
    assert path_is_live("/" + "a" * 5000)  # too long to look at: not known to be gone


@pytest.fixture
def shared() -> Iterator[Path]:
    with shared_folder() as folder:
        yield folder


def test_a_file_behind_an_unreadable_folder_is_unreachable_not_gone(
    db: DatabaseManager, shared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if db.is_sqlite:  # a catalog where the user nobody may read and write
        db = DatabaseManager(shared / "catalog.sqlite3")
        db.init_db()
    locked = shared / "locked"
    locked.mkdir()
    kept, lost, here = locked / "kept.safetensors", shared / "lost.ckpt", shared / "here.pt"
    kept.write_bytes(b"k")
    here.write_bytes(b"h")
    for sha, path in ((KEPT, kept), (LOST, lost), (HERE, here)):
        db.upsert_model({"sha256": sha, "path": str(path), "type": "lora"})
    url = db.engine.url.render_as_string(hide_password=False)
    db.dispose()
    if db.is_sqlite:
        (shared / "catalog.sqlite3").chmod(0o666)
    assert (
        json.loads(cli(capsys, "show", str(kept), "--json", "--db", url))["model"]["file_state"]
        == "present"
    )  # before: the commands are loaded while the files can be read

    with unreadable(locked):
        assert check_file(str(kept)).state is FileState.UNREACHABLE
        looking = DatabaseManager(url, read_only=True)
        try:
            assert [m.sha256 for m in looking.find_models(missing=True)] == [LOST]
            assert [m.sha256 for m in looking.find_models(unreachable=True)] == [KEPT]
            both = looking.find_models(missing=True, unreachable=True)
            assert [m.sha256 for m in both] == [KEPT, LOST]
        finally:
            looking.dispose()
        missing = cli(capsys, "models", "--missing", "--db", url)
        listed = json.loads(cli(capsys, "models", "--unreachable", "--json", "--db", url))
        shown = cli(capsys, "show", str(kept), "--db", url)
        shown_json = json.loads(cli(capsys, "show", KEPT, "--json", "--db", url))
        gone = cli(capsys, "show", LOST, "--db", url)

    assert str(lost) in missing
    assert str(kept) not in missing
    assert [(m["sha256"], m["file_state"], m["file_exists"]) for m in listed["models"]] == [
        (KEPT, "unreachable", None)
    ]
    assert "(the file cannot be reached now: Permission denied; it is not called gone)" in shown
    assert "(the file is gone)" not in shown
    assert (shown_json["model"]["file_state"], shown_json["model"]["file_exists"]) == (
        "unreachable",
        None,
    )
    assert "(the file is gone)" in gone


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The command line run in this process (so it acts as whichever user the test is)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out
