"""Streaming, pausable, cancellable SHA-256 of large files.

Model files are 2-7 GB, so a file is never read whole: it is streamed in chunks
through preallocated buffers, and memory stays constant whatever the file size.

Design (chosen by measurement, see ``bench/hash_bench.py``): on a file in the
page cache a plain ``readinto`` + ``update`` loop reaches only ~0.8 of what the
CPU can hash, because the kernel's copy into the buffer is not overlapped with
hashing. So two threads hash alternate chunks, a relay: while one thread hashes
its chunk, the other reads the next one into its own buffer, then they swap
roles. Each chunk is hashed by the thread (and so on the core) that just copied
it, while it is still in that core's cache; handing a freshly filled buffer to
another core to hash measured 10-25 % slower. ``readinto`` and
``hashlib.update`` both release the GIL, so the two threads really run in
parallel, and hashing in other threads (other files) is not held up either.

The hash object is passed from one thread to the other with ``threading.Event``
turns, so chunks enter it strictly in file order. Only the calling thread runs
callbacks and honours pause/stop (before each of its chunks, holding the turn,
so the other thread waits too and nothing is lost or read twice). A second
digest (``beside``, AutoV3) takes the same chunks in a third thread
(``hash_lane``), so that it does not add its time to the SHA-256's.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from modelvault import winfiles
from modelvault.errors import (
    FileChangedError,
    HashCancelled,
    NotRegularFileError,
    ValidationError,
)
from modelvault.file_stamp import FileStamp, stamp_of
from modelvault.hash_lane import Lane, Step
from modelvault.hash_relay import Sink, advise_sequential, relay, report_some

if TYPE_CHECKING:
    from hashlib import _Hash

    StrPath = str | os.PathLike[str]

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_HEARTBEAT_SECONDS",
    "ChunkTap",
    "FileDigest",
    "HashControl",
    "hash_file",
    "hash_file_digest",
    "open_regular_file",
]

# 2 MiB, by measurement (2-core Xeon with SHA-NI and 4 MiB of L2, a 2 GiB cached file):
# 0.92-0.95 of `openssl speed`; 1 MiB ~0.90 and 0.5 MiB ~0.86, because every hand-over
# between the two threads costs a wake-up. A chunk should also fit in a core's L2, and
# stay small enough for a pause to take effect quickly on a slow share (the caller
# checks every other chunk: two 2 MiB reads at 10 MB/s take 0.4 s). Memory: 2 x 2 MiB.
DEFAULT_CHUNK_SIZE = 2 * 1024 * 1024

# While paused, on_progress(0) is called this often so the caller can renew its lease.
DEFAULT_HEARTBEAT_SECONDS = 1.0


class HashControl:
    """A pause/resume/stop switch, shared by the thread that steers and the hash loops.

    Thread-safe. Pausing keeps each hash in progress where it is; stopping wins
    over pausing (a paused loop wakes at once and raises ``HashCancelled``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # so pause() cannot undo a concurrent stop()
        self._paused = False
        self._stopped = threading.Event()
        self._go = threading.Event()  # set while running or stopped: what a paused loop awaits
        self._go.set()

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            if not self._stopped.is_set():
                self._go.clear()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._go.set()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            self._go.set()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait_until_running(self, timeout: float | None = None) -> bool:
        """Block while paused; True once running or stopped (see ``stopped``), False on timeout."""
        if self._go.is_set():  # the usual case, without the lock Event.wait takes
            return True
        return self._go.wait(timeout)

    def checkpoint(
        self,
        what: str,
        *,
        heartbeat: Callable[[], None] | None = None,
        every: float = DEFAULT_HEARTBEAT_SECONDS,
    ) -> None:
        """Between two steps of a run: hold here while paused (calling ``heartbeat``
        every ``every`` seconds, if given); once stopped, raise ``HashCancelled``
        saying ``what`` was stopped.

        The one way every run stops: the hash loops call it before each chunk
        (``hash_file``'s ``control``), the import after each committed batch
        (``import_legacy_data``'s), the scan after each batch of writes
        (``scan_roots``'s); ``MigrationManager`` gives all of them its own.
        """
        while not self.wait_until_running(every):
            if heartbeat is not None:
                heartbeat()
        if self.stopped:
            raise HashCancelled(f"{what} was stopped.")

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until ``stop()`` (e.g. to sleep between retries). True if stopped."""
        return self._stopped.wait(timeout)


class ChunkTap(Protocol):
    """Something else fed the very bytes the hash reads (a header reader, a second
    digest): ``begin(size)`` once the file is open, then ``take(chunk)`` for every
    chunk in file order, in whichever thread holds the hash's turn. It must not
    raise: whatever it raises ends the hashing."""

    def begin(self, size: int) -> None: ...

    def take(self, chunk: memoryview) -> None: ...


@dataclass(frozen=True)
class FileDigest:
    """A file's SHA-256 (lower-case hex) and the stamp it had while hashed: size, mtime,
    and (None where the system gives none, see ``modelvault.file_stamp``) its inode
    change time and inode number."""

    sha256: str
    size_bytes: int
    mtime_ns: int
    ctime_ns: int | None = None
    ino: int | None = None

    @property
    def stamp(self) -> FileStamp:
        return FileStamp(self.size_bytes, self.mtime_ns, self.ctime_ns, self.ino)


def _digest(sha: _Hash, st: os.stat_result) -> FileDigest:
    stamp = stamp_of(st)
    return FileDigest(sha.hexdigest(), stamp.size, stamp.mtime_ns, stamp.ctime_ns, stamp.ino)


def hash_file_digest(
    path: StrPath,
    *,
    chunk_size: int | None = None,
    control: HashControl | None = None,
    on_progress: Callable[[int], None] | None = None,
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    tap: ChunkTap | None = None,
    beside: Step | None = None,
) -> FileDigest:
    """Hash ``path`` by streaming it; see the module docstring for how.

    ``tap`` (``ChunkTap``) is fed every chunk hashed, right after the hash,
    so a header or a second digest costs no second open and no extra read.
    ``beside`` (a second digest's update) is given every chunk too, after the
    tap, in file order, but in a thread of its own (``hash_lane``), so that
    on two cores it runs while the SHA-256 does; it must not raise either.

    ``on_progress(n)`` is called in the calling thread after each chunk with the
    bytes just hashed, and with 0 every ``heartbeat_seconds`` while ``control``
    is paused; whatever it raises propagates and ends the hashing.

    Raises ``HashCancelled`` when ``control`` is stopped, ``FileChangedError``
    when the file's stamp changed meanwhile (its size, its mtime, or its inode
    change time: a rewrite that puts the mtime back is caught by the last; see
    ``modelvault.file_stamp``), when fewer or more bytes than its size could be
    read, or when the path names another file at the end (one was renamed over
    it, or it was removed), ``NotRegularFileError`` for a directory, FIFO, socket or
    device (refused before it is opened: nothing ever blocks on one; see
    ``open_regular_file``), and the ``OSError`` of ``stat``, opening or reading
    as it is (``FileNotFoundError``, ``PermissionError``...).
    """
    chunk = _checked_chunk_size(chunk_size)
    if not heartbeat_seconds > 0:
        raise ValidationError(f"heartbeat_seconds must be positive, not {heartbeat_seconds!r}.")
    name = os.fspath(path)
    report = on_progress or _ignore

    what = f"Hashing {name}"

    def beat() -> None:
        report(0)

    def checkpoint() -> None:
        if control is not None:
            control.checkpoint(what, heartbeat=beat, every=heartbeat_seconds)

    seen = os.stat(name)
    _require_regular(name, seen)
    if seen.st_size < chunk:
        # One chunk: a relay's second handle and thread would cost more than the work.
        return _hash_small(name, seen, checkpoint, report, tap, beside)
    return _hash_large(name, seen, chunk, checkpoint, report, tap, beside)


def _hash_large(
    name: str,
    seen: os.stat_result,
    chunk: int,
    checkpoint: Callable[[], None],
    report: Callable[[int], None],
    tap: ChunkTap | None,
    beside: Step | None,
) -> FileDigest:
    """Hash a file of more than one chunk, one handle reading ahead of the one hashed."""
    mine, before = _open_checked(name, seen, follow_symlinks=True)
    if tap is not None:
        tap.begin(before.st_size)
    with mine:
        sha = hashlib.sha256()
        # A second handle, not a shared fd: each thread seeks its own (no pread on Windows).
        with open_regular_file(name) as theirs:
            if not os.path.samestat(before, os.fstat(theirs.fileno())):
                raise FileChangedError(f"{name} was replaced while it was being opened.")
            for handle in (mine, theirs):
                advise_sequential(handle)
            sink = Sink(sha, tap, Lane(beside) if beside is not None else None)
            try:
                total = relay(mine, theirs, sink, chunk, before.st_size, checkpoint, report)
            except BaseException:
                sink.close(drop=True)
                raise
            sink.close()
        after = os.fstat(mine.fileno())
    _check_unchanged(name, before, after, total)
    return _digest(sha, before)


def _hash_small(
    name: str,
    seen: os.stat_result,
    checkpoint: Callable[[], None],
    report: Callable[[int], None],
    tap: ChunkTap | None = None,
    beside: Step | None = None,
) -> FileDigest:
    """``hash_file_digest`` for a file smaller than one chunk: one read, in this thread.

    The same checks as for a big file, in fewer system calls where all is well:
    the path names the same file, unchanged, after the read (``stat``; the
    descriptor was checked to be that file when it was opened), so the
    descriptor's own ``fstat`` is only asked when something did change, to say what.
    """
    fd, before = _open_fd(name, seen, follow_symlinks=True)
    try:
        checkpoint()
        want = before.st_size + 1  # one byte more: a file that grew is caught
        data = os.read(fd, want)
        # Network filesystems may return short reads before the end. Once the size is
        # read, no read is asked to see the end: a file that grew meanwhile shows it in
        # the stat below (its size), so the check costs no system call where all is well.
        while len(data) < before.st_size:
            more = os.read(fd, want - len(data))
            if not more:
                break
            data += more
        sha = hashlib.sha256(data)
        total = len(data)
        if tap is not None:
            tap.begin(before.st_size)
            tap.take(memoryview(data))
        if beside is not None:  # one chunk: no second thread to run it in
            beside(memoryview(data))
        report_some(report, total)
        try:
            unchanged = _identity(os.stat(name)) == _identity(before)
        except OSError:
            unchanged = False  # _check_path_still_names says why
        if not unchanged or total != before.st_size:
            _check_unchanged(name, before, os.fstat(fd), total)
    finally:
        os.close(fd)
    return _digest(sha, before)


def _check_unchanged(name: str, before: os.stat_result, after: os.stat_result, total: int) -> None:
    """FileChangedError unless the file read (``before``, ``after``: its descriptor's
    stat) kept its stamp, ``total`` bytes were its size, and the path still names it,
    unchanged. (A file replaced or removed says so before its change time does: its
    own change time moves as it loses its name.)"""
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        _check_stamp(name, before, after)  # raises, saying which moved
    if total != before.st_size:
        raise FileChangedError(
            f"{name} changed while it was being hashed: "
            f"read {total} bytes of a file of {before.st_size}."
        )
    _check_path_still_names(name, before)
    _check_stamp(name, before, after)


def _check_stamp(name: str, before: os.stat_result, after: os.stat_result) -> None:
    """FileChangedError, saying what moved, unless the two stats show one stamp."""
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise FileChangedError(
            f"{name} changed while it was being hashed "
            f"(size {before.st_size} -> {after.st_size} bytes, "
            f"mtime_ns {before.st_mtime_ns} -> {after.st_mtime_ns})."
        )
    was, now = stamp_of(before), stamp_of(after)
    if was != now:
        raise FileChangedError(
            f"{name} was written to while it was being hashed, though its size and mtime "
            f"are as they were (its change time moved: ctime_ns {was.ctime_ns} -> "
            f"{now.ctime_ns}): it will be read again."
        )


def hash_file(
    path: StrPath,
    *,
    chunk_size: int | None = None,
    control: HashControl | None = None,
    on_progress: Callable[[int], None] | None = None,
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
) -> str:
    """The lower-case hex SHA-256 of ``path``; see ``hash_file_digest``."""
    return hash_file_digest(
        path,
        chunk_size=chunk_size,
        control=control,
        on_progress=on_progress,
        heartbeat_seconds=heartbeat_seconds,
    ).sha256


def open_regular_file(path: StrPath, *, follow_symlinks: bool = True) -> io.FileIO:
    """Open ``path`` for reading without ever blocking, and only if it is a regular file.

    A FIFO would block ``open()`` until a writer comes, a device may never end
    or may act on being opened: the path is ``stat``-ed first (following
    symlinks) and anything but a regular file is refused unopened with
    ``NotRegularFileError``. The open itself is non-blocking, and the descriptor
    is checked again, in case the path was swapped for something else meanwhile
    (``FileChangedError`` if it names another file now). Other failures are the
    ``OSError`` of ``stat`` or ``open`` as it is. With ``follow_symlinks=False``
    a symbolic link is refused like any other file that is not regular. On
    Windows the file is opened sharing read, write and delete
    (``modelvault.winfiles``): other programs may move, replace or delete it
    while it is open, as they may elsewhere.
    """
    return _open_regular(os.fspath(path), follow_symlinks=follow_symlinks)[0]


def _open_regular(name: str, *, follow_symlinks: bool) -> tuple[io.FileIO, os.stat_result]:
    """``open_regular_file``, and the ``fstat`` of the descriptor it checked."""
    seen = os.stat(name, follow_symlinks=follow_symlinks)
    _require_regular(name, seen)
    return _open_checked(name, seen, follow_symlinks=follow_symlinks)


def _open_checked(
    name: str, seen: os.stat_result, *, follow_symlinks: bool
) -> tuple[io.FileIO, os.stat_result]:
    """``_open_fd`` as a file object."""
    fd, opened = _open_fd(name, seen, follow_symlinks=follow_symlinks)
    try:
        return io.FileIO(fd, "rb", closefd=True), opened
    except BaseException:
        os.close(fd)
        raise


def _open_fd(
    name: str, seen: os.stat_result, *, follow_symlinks: bool
) -> tuple[int, os.stat_result]:
    """Open ``name``, which ``seen`` (its ``stat``) says is a regular file, without ever
    blocking; the descriptor and its ``fstat``, checked to be that same regular file."""
    if sys.platform == "win32":  # shared for deleting too: others may move the file
        fd = winfiles.open_shared(name, follow_symlinks=follow_symlinks)
    else:
        no_follow = 0 if follow_symlinks else _O_NOFOLLOW
        fd = os.open(name, os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC | no_follow)
    try:
        opened = os.fstat(fd)
        _require_regular(name, opened)
        if not os.path.samestat(seen, opened):
            raise FileChangedError(f"{name} was replaced while it was being opened.")
        if _O_NONBLOCK:
            os.set_blocking(fd, True)  # a regular file reads the same either way; be plain
        return fd, opened
    except BaseException:
        os.close(fd)
        raise


_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _require_regular(name: str, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    raise NotRegularFileError(
        f"{name} is {kind_of(st.st_mode)}, not a regular file, so it cannot be hashed."
    )


def kind_of(mode: int) -> str:
    """What a file that is not a regular file is: ``"a FIFO (named pipe)"``, ..."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    return next((what for test, what in kinds if test(mode)), "a special file")


def _check_path_still_names(name: str, read: os.stat_result) -> None:
    """The path must still name the file that was read, unchanged: else FileChangedError.

    The descriptor's own checks cannot see a file renamed over the path while
    it was hashed (``mv new.bin model.bin``): the old file is read to its end,
    intact, but it is not what the path holds any more.
    """
    try:
        now = os.stat(name)
    except FileNotFoundError:
        gone = f"{name} was removed or renamed while it was being hashed."
        raise FileChangedError(gone) from None
    except OSError as exc:  # e.g. Windows: a file deleted while open is "pending deletion"
        raise FileChangedError(
            f"{name} could not be looked at again once hashed ({exc.strerror or exc}), "
            "so nothing shows it is still the file that was read."
        ) from exc
    if (now.st_dev, now.st_ino) != (read.st_dev, read.st_ino):
        raise FileChangedError(
            f"{name} was replaced while it was being hashed: the path names another file now."
        )
    _check_stamp(name, read, now)


def _identity(st: os.stat_result) -> tuple[int, int, FileStamp]:
    """What a path must still show for the file read: its device and inode (which
    ``stamp_of`` leaves out where 0), and its stamp."""
    return (st.st_dev, st.st_ino, stamp_of(st))


def _checked_chunk_size(chunk_size: int | None) -> int:
    if chunk_size is None:
        return DEFAULT_CHUNK_SIZE
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValidationError(f"chunk_size must be a positive number of bytes, not {chunk_size!r}.")
    return chunk_size


def _ignore(_: int) -> None:
    pass
