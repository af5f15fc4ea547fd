"""Hostile files at staged paths: nothing blocks, permanent errors fail at once, counts are exact.

Real special files (a FIFO, a unix socket, a device behind a symlink, a
directory, a symlink loop) and real renames. Every run that would hang if a
file were opened blocking runs in a thread and is waited for with a deadline,
so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for
from support.worker import DEADLINE, Events, MidHash, make_file, run_with_deadline, stage, staging

from modelvault import DatabaseManager, Settings
from modelvault.errors import FileChangedError, NotRegularFileError
from modelvault.hashing import hash_file, hash_file_digest
from modelvault.migration.worker import WorkerEvent, process_pending
from modelvault.migration.worker_files import classify_os_error

FAST = Settings(retry_backoff_seconds=0, max_attempts=5, hash_chunk_bytes=4096)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket's path must fit in about 100 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="mv-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def hostile(tmp_path: Path, short_dir: Path) -> Iterator[dict[str, tuple[str, str]]]:
    """name -> (staged path, words its last_error must contain)."""
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)
    device = tmp_path / "zero.safetensors"
    device.symlink_to("/dev/zero")
    folder = tmp_path / "folder.ckpt"
    folder.mkdir()
    loop_a, loop_b = tmp_path / "loop_a.ckpt", tmp_path / "loop_b.ckpt"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    a_file, _ = make_file(tmp_path, "plain.bin", b"data")
    sock_path = short_dir / "s.ckpt"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock_path))
        yield {
            "fifo": (str(fifo), "is a FIFO (named pipe), not a regular file"),
            "socket": (str(sock_path), "is a socket, not a regular file"),
            "device": (str(device), "is a character device, not a regular file"),
            "folder": (str(folder), "is a directory, not a regular file"),
            "loop": (str(loop_a), "Too many levels of symbolic links"),
            "notdir": (a_file + "/model.ckpt", "Not a directory"),
            "relative": ("models/loras/x.safetensors", "is a relative path"),
        }


@pytest.mark.posix_only("a FIFO, a unix socket, /dev/zero and symlink loops")
def test_special_files_and_bad_paths_fail_at_once_without_blocking(
    db: DatabaseManager, hostile: dict[str, tuple[str, str]]
) -> None:
    # A 5000-character path; PostgreSQL's column holds 512, so there a 300-byte name.
    long = "/" + "a" * 4999 if db.is_sqlite else "/tmp/" + "a" * 300
    cases = {**hostile, "long": (long, "path too long: ")}
    for path, _ in cases.values():
        stage(db, path, tags=[{"name": "kept"}])
    events = Events()

    report = run_with_deadline(lambda: process_pending(db, settings=FAST, on_event=events))

    rows = staging(db)
    for name, (path, words) in cases.items():
        row = rows[path]
        assert (row.status, row.attempts) == ("failed", 1), name
        assert row.last_error is not None
        assert words in row.last_error, (name, row.last_error)
        assert row.tags == [{"name": "kept", "color": None}]
    n = len(cases)
    assert (report.failed, report.retried, report.released, report.finished) == (n, 0, 0, n)
    assert report.files_hashed == 0
    assert len(events.of("finished")) == len(events.of("error")) == n
    assert events.of("released") == []
    assert {e.outcome for e in events.of("finished")} == {"failed"}


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        (errno.EIO, False),
        (errno.ESTALE, False),
        (errno.EAGAIN, False),
        (errno.EACCES, False),
        (errno.EPERM, False),
        (errno.ENAMETOOLONG, True),
        (errno.ELOOP, True),
        (errno.ENOTDIR, True),
        (errno.EISDIR, True),
    ],
)
def test_os_errors_are_classified(code: int, permanent: bool) -> None:
    message, is_permanent = classify_os_error(OSError(code, os.strerror(code), "/x"))
    assert is_permanent is permanent
    if code == errno.ENAMETOOLONG:
        assert message.startswith("path too long: /x (2 characters), or a name in it,")
    else:
        assert os.strerror(code) in message


def test_our_own_errors_are_classified() -> None:
    assert classify_os_error(NotRegularFileError("/x is a FIFO")) == ("/x is a FIFO", True)
    assert classify_os_error(FileChangedError("/x changed")) == ("/x changed", False)


@pytest.mark.posix_only("a FIFO")
def test_hashing_a_fifo_refuses_it_unopened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    caught: list[BaseException] = []

    def target() -> None:
        try:
            hash_file(fifo)
        except BaseException as exc:  # handed to the test thread
            caught.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: not thread.is_alive(), "hash_file to refuse the FIFO", DEADLINE)
    (error,) = caught
    assert isinstance(error, NotRegularFileError)
    assert str(error) == (
        f"{fifo} is a FIFO (named pipe), not a regular file, so it cannot be hashed."
    )


def test_a_file_renamed_over_the_one_being_hashed_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    make_file(tmp_path, "model.bin", b"a" * 64 * 1024)
    # Same size and mtime: only the path's inode tells the files apart.
    newer, _ = make_file(tmp_path, "new.bin", b"b" * 64 * 1024)
    before = os.stat(path)
    os.utime(newer, ns=(before.st_atime_ns, before.st_mtime_ns))
    replaced = threading.Event()

    def on_progress(_: int) -> None:
        if not replaced.is_set():
            replaced.set()
            mover = threading.Thread(target=os.replace, args=(newer, path))
            mover.start()
            mover.join()

    with pytest.raises(FileChangedError, match="the path names another file now"):
        hash_file_digest(path, chunk_size=4096, on_progress=on_progress)
    assert replaced.is_set()


def test_a_file_removed_while_hashed_is_caught(tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "model.bin", b"a" * 64 * 1024)

    def on_progress(_: int) -> None:
        if os.path.exists(path):
            os.unlink(path)

    with pytest.raises(FileChangedError, match="was removed or renamed while it was being hashed"):
        hash_file_digest(path, chunk_size=4096, on_progress=on_progress)


def test_the_worker_hashes_again_a_file_renamed_over_mid_hash(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path, _ = make_file(tmp_path, "model.safetensors", b"a" * 64 * 1024)
    newer, new_sha = make_file(tmp_path, "incoming.bin", b"b" * 64 * 1024)
    stage(db, path)

    def rename_over() -> None:  # from another thread, while the hash waits for the event
        mover = threading.Thread(target=os.replace, args=(newer, path))
        mover.start()
        mover.join()

    events = on_event = MidHash(rename_over)

    report = run_with_deadline(lambda: process_pending(db, settings=FAST, on_event=on_event))

    model = db.get_model(new_sha)
    assert model is not None
    assert model.path == path
    (error,) = events.of("error")
    assert error.outcome == "retried"
    assert error.message is not None
    assert "the path names another file now" in error.message
    assert (report.retried, report.imported, report.finished, report.released) == (1, 1, 1, 0)
    assert staging(db) == {}


def test_every_row_is_counted_once_under_the_outcome_it_got(
    db: DatabaseManager, tmp_path: Path
) -> None:
    new_a, _ = make_file(tmp_path, "a.safetensors", b"a" * 5000)
    new_b, _ = make_file(tmp_path, "b.safetensors", b"b" * 5000)
    copy, _ = make_file(tmp_path, "copy.safetensors", b"a" * 5000)
    changing, _ = make_file(tmp_path, "changing.safetensors", b"c" * 64 * 1024)
    folder = tmp_path / "folder.ckpt"
    folder.mkdir()
    gone = str(tmp_path / "gone.safetensors")
    for path in (new_a, new_b, copy, changing, str(folder), gone):
        stage(db, path)

    events = Events()

    def on_event(event: WorkerEvent) -> None:
        events(event)
        first_read = len(events.of("progress", changing)) == 1
        if event.kind == "progress" and event.path == changing and first_read:
            with open(changing, "ab") as f:  # changes under its first attempt only
                f.write(b"more")

    report = run_with_deadline(
        lambda: process_pending(db, workers=1, settings=FAST, on_event=on_event)
    )

    counts = {k: v for k, v in report.to_dict().items() if isinstance(v, int) and v}
    del counts["bytes_hashed"]
    assert counts == {
        "imported": 3,  # a, b, and changing on its second attempt
        "duplicate": 1,
        "missing": 1,
        "failed": 1,
        "retried": 1,
        "files_hashed": 4,  # a, b, copy, changing (its failed attempt hashed no file)
        "workers": 1,
        "finished": 6,
    }
    finished = {e.path: e.outcome for e in events.of("finished")}
    assert len(events.of("finished")) == len(finished) == 6
    assert finished[copy] == "duplicate"
    assert (finished[gone], finished[str(folder)], finished[changing]) == (
        "missing",
        "failed",
        "imported",
    )
    assert sorted(str(e.outcome) for e in events.of("error")) == ["failed", "missing", "retried"]
    assert events.of("released") == events.of("abandoned") == []
    assert len(events.of("claimed")) == 7  # six rows, one of them twice
