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
    FileState,
    after_error,
    check_file,
    path_anchor,
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
