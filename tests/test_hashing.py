"""modelvault.hashing on real files: digests, pause/resume/stop, heartbeats, changed files."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from support import rewrite_hiding
from support.digests import CHUNK, make_file, sha

from modelvault.errors import FileChangedError, HashCancelled, HashingError, ValidationError
from modelvault.file_stamp import stamp_of
from modelvault.hashing import (
    DEFAULT_CHUNK_SIZE,
    FileDigest,
    HashControl,
    hash_file,
    hash_file_digest,
)

DEADLINE = 10.0  # seconds; only ever reached when something is broken


class Recorder:
    """An on_progress that records what it is given, and can act on the n-th chunk."""

    def __init__(self, on_chunk: Callable[[int], object] | None = None) -> None:
        self.on_chunk = on_chunk
        self.lock = threading.Lock()
        self.chunks: list[int] = []
        self.heartbeats = 0
        self.heartbeat = threading.Event()  # set at each heartbeat
        self.threads: set[int] = set()

    def __call__(self, n: int) -> None:
        self.threads.add(threading.get_ident())
        with self.lock:
            if n == 0:
                self.heartbeats += 1
                self.heartbeat.set()
                return
            self.chunks.append(n)
            count = len(self.chunks)
        if self.on_chunk is not None:
            self.on_chunk(count)

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.chunks)

    def next_heartbeat(self) -> None:
        self.heartbeat.clear()
        assert self.heartbeat.wait(DEADLINE), "no heartbeat while paused"


class HashThread(threading.Thread):
    """hash_file_digest in a thread of its own, keeping its result or exception."""

    def __init__(self, path: Path, **kwargs: object) -> None:
        super().__init__(daemon=True)
        self.path, self.kwargs = path, kwargs
        self.result: FileDigest | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = hash_file_digest(self.path, **self.kwargs)  # type: ignore[arg-type]
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.join(DEADLINE)
        assert not self.is_alive(), "hashing did not end"


def no_helper_left() -> bool:
    return not any(t.name == "modelvault-hash" for t in threading.enumerate())


# Digests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1, 3 * CHUNK, 7 * CHUNK + 123],
)
def test_digest_matches_hashlib(tmp_path: Path, size: int) -> None:
    path = tmp_path / "model.bin"
    data = make_file(path, size)
    progress = Recorder()

    digest = hash_file_digest(path, chunk_size=CHUNK, on_progress=progress)

    stat = os.stat(path)
    assert (digest.sha256, digest.stamp) == (sha(data), stamp_of(stat))
    assert (digest.size_bytes, digest.mtime_ns) == (size, stat.st_mtime_ns)
    assert progress.total == size
    assert all(0 < n <= CHUNK for n in progress.chunks)
    assert progress.heartbeats == 0
    assert no_helper_left()


def test_default_chunk_size_over_several_chunks(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    data = make_file(path, 2 * DEFAULT_CHUNK_SIZE + 12345)
    progress = Recorder()

    assert hash_file(path, on_progress=progress) == sha(data)
    assert progress.chunks == [DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, 12345]


def test_hash_file_is_lowercase_hex_and_takes_str_paths(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    data = make_file(path, 1000)
    result = hash_file(str(path))
    assert result == sha(data)
    assert result == result.lower()
    assert len(result) == 64


def test_progress_is_reported_in_the_calling_thread(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    make_file(path, 10 * CHUNK)
    progress = Recorder()
    hash_file(path, chunk_size=CHUNK, on_progress=progress)
    assert progress.threads == {threading.get_ident()}


def test_two_threads_hash_two_files_at_once(tmp_path: Path) -> None:
    paths = [tmp_path / "one.bin", tmp_path / "two.bin"]
    datas = [make_file(path, 300 * CHUNK + i, seed=i) for i, path in enumerate(paths)]
    both_started = threading.Barrier(2, timeout=DEADLINE)  # both mid-file at the same time
    workers = [
        HashThread(
            path,
            chunk_size=CHUNK,
            on_progress=Recorder(lambda count: both_started.wait() if count == 1 else None),
        )
        for path in paths
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.finish()
    assert [w.error for w in workers] == [None, None]
    assert [w.result.sha256 if w.result else None for w in workers] == [sha(d) for d in datas]


def test_last_chunk_hashed_by_the_helper_during_a_callback_is_counted(tmp_path: Path) -> None:
    # Chunks 0 and 2 are hashed in the calling thread, 1 and 3 (the short last one) in the
    # helper thread; here the helper ends while the caller is still reporting chunk 2.
    path = tmp_path / "model.bin"
    data = make_file(path, 3 * CHUNK + 1053)

    def let_the_helper_finish(count: int) -> None:
        if count == 3:
            for thread in threading.enumerate():
                if thread.name == "modelvault-hash":
                    thread.join(DEADLINE)

    progress = Recorder(let_the_helper_finish)
    assert hash_file(path, chunk_size=CHUNK, on_progress=progress) == sha(data)
    assert progress.chunks == [CHUNK, CHUNK, CHUNK, 1053]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4096"])
def test_bad_chunk_size_is_rejected(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "model.bin"
    make_file(path, 10)
    with pytest.raises(ValidationError, match="chunk_size"):
        hash_file(path, chunk_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        hash_file(path, chunk_size=bad)  # type: ignore[arg-type]


def test_bad_heartbeat_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    make_file(path, 10)
    with pytest.raises(ValidationError, match="heartbeat_seconds"):
        hash_file(path, heartbeat_seconds=0)


# Errors from the file --------------------------------------------------------------------


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        hash_file(tmp_path / "gone.bin")
    assert not isinstance(caught.value, HashingError)


def test_directory_raises_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):  # noqa: PT011 - IsADirectoryError, PermissionError on Windows
        hash_file(tmp_path)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_is_not_hashed() -> None:
    with pytest.raises(HashingError, match="not a regular file"):
        hash_file("/dev/null")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_file_longer_than_its_size_raises_file_changed() -> None:
    # /proc files say they are empty, yet reading them gives bytes.
    with pytest.raises(FileChangedError, match=r"read \d+ bytes of a file of 0"):
        hash_file("/proc/self/status")


def test_file_growing_while_hashed_raises_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    make_file(path, 10 * CHUNK)

    def append(count: int) -> None:
        if count == 1:
            with open(path, "ab") as f:
                f.write(b"more bytes")

    with pytest.raises(FileChangedError, match=r"growing\.bin") as caught:
        hash_file(path, chunk_size=CHUNK, on_progress=Recorder(append))
    assert isinstance(caught.value, OSError)
    assert no_helper_left()


def test_file_shrinking_while_hashed_raises_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "shrinking.bin"
    make_file(path, 10 * CHUNK)

    def truncate(count: int) -> None:
        if count == 1:
            os.truncate(path, 3 * CHUNK)

    with pytest.raises(FileChangedError, match=r"shrinking\.bin"):
        hash_file(path, chunk_size=CHUNK, on_progress=Recorder(truncate))


def test_file_rewritten_in_place_raises_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "rewritten.bin"
    make_file(path, 10 * CHUNK)
    mtime_ns = os.stat(path).st_mtime_ns

    def touch(count: int) -> None:
        if count == 1:  # same size, another mtime: what a rewrite in place looks like
            os.utime(path, ns=(mtime_ns + 10**9, mtime_ns + 10**9))

    with pytest.raises(FileChangedError, match=r"rewritten\.bin"):
        hash_file(path, chunk_size=CHUNK, on_progress=Recorder(touch))


@pytest.mark.posix_only("the inode change time: on Windows st_ctime is the creation time")
@pytest.mark.parametrize("size", [CHUNK // 2, 10 * CHUNK], ids=["one read", "relay"])
def test_a_rewrite_that_puts_the_mtime_back_is_caught(tmp_path: Path, size: int) -> None:
    path = tmp_path / "hidden.bin"
    make_file(path, size)
    other = hashlib.shake_256(b"other bytes").digest(size)

    def rewrite(count: int) -> None:
        if count == 1:  # same size, mtime put back: only the change time moves
            rewrite_hiding(path, other)

    with pytest.raises(
        FileChangedError,
        match=r"hidden\.bin was written to while it was being hashed, though its size and "
        r"mtime are as they were \(its change time moved",
    ):
        hash_file(path, chunk_size=CHUNK, on_progress=Recorder(rewrite))
    assert no_helper_left()
    again = hash_file_digest(path, chunk_size=CHUNK)  # read again: the new bytes' hash
    assert (again.sha256, again.stamp) == (sha(other), stamp_of(os.stat(path)))


def test_a_file_moved_away_while_hashed_is_refused_and_moved(tmp_path: Path) -> None:
    """Others may move a file that is being hashed (on Windows too: it is opened
    sharing delete); the hash of a file that left its path is not returned."""
    path, moved = tmp_path / "model.bin", tmp_path / "moved.bin"
    data = make_file(path, 10 * CHUNK)

    def move(count: int) -> None:
        if count == 1:
            os.replace(path, moved)

    with pytest.raises(FileChangedError, match=r"model\.bin was removed or renamed"):
        hash_file(path, chunk_size=CHUNK, on_progress=Recorder(move))
    assert moved.read_bytes() == data


def test_exception_from_on_progress_propagates(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    make_file(path, 20 * CHUNK)

    class LeaseLost(Exception):
        pass

    def lose(count: int) -> None:
        if count == 3:
            raise LeaseLost

    with pytest.raises(LeaseLost):
        hash_file(path, chunk_size=CHUNK, on_progress=Recorder(lose))
    assert no_helper_left()


# Pause, resume, stop -------------------------------------------------------------------


def test_pause_blocks_with_heartbeats_and_resume_continues_the_same_hash(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    data = make_file(path, 50 * CHUNK + 7)
    control = HashControl()
    progress = Recorder(lambda count: control.pause() if count == 1 else None)
    worker = HashThread(
        path, chunk_size=CHUNK, control=control, on_progress=progress, heartbeat_seconds=0.01
    )
    worker.start()

    # Heartbeats come only from the paused loop: once one arrives, hashing is blocked.
    progress.next_heartbeat()
    at_pause = progress.total
    progress.next_heartbeat()
    progress.next_heartbeat()
    assert progress.total == at_pause < len(data)
    assert worker.is_alive()

    control.resume()
    worker.finish()
    assert worker.error is None
    assert worker.result is not None
    assert worker.result.sha256 == sha(data)
    assert progress.total == len(data)  # nothing was read twice
    assert no_helper_left()


def test_stop_while_paused_raises_hash_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    make_file(path, 50 * CHUNK)
    control = HashControl()
    progress = Recorder(lambda count: control.pause() if count == 2 else None)
    worker = HashThread(
        path, chunk_size=CHUNK, control=control, on_progress=progress, heartbeat_seconds=0.01
    )
    worker.start()
    progress.next_heartbeat()

    control.stop()
    worker.finish()
    assert isinstance(worker.error, HashCancelled)
    assert no_helper_left()


def test_stop_between_chunks_raises_hash_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    make_file(path, 50 * CHUNK)
    control = HashControl()
    progress = Recorder(lambda count: control.stop() if count == 3 else None)
    with pytest.raises(HashCancelled, match=r"model\.bin"):
        hash_file(path, chunk_size=CHUNK, control=control, on_progress=progress)
    assert progress.total < 50 * CHUNK


def test_stopped_control_hashes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    make_file(path, 10)
    control = HashControl()
    control.stop()
    progress = Recorder()
    with pytest.raises(HashCancelled):
        hash_file(path, control=control, on_progress=progress)
    assert progress.chunks == []


def test_running_control_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    data = make_file(path, 5 * CHUNK)
    assert hash_file(path, chunk_size=CHUNK, control=HashControl()) == sha(data)


# HashControl ------------------------------------------------------------------------------


def test_control_states() -> None:
    control = HashControl()
    assert (control.paused, control.stopped) == (False, False)
    assert control.wait_until_running(0)
    control.pause()
    assert control.paused
    assert not control.wait_until_running(0.01)
    control.resume()
    assert not control.paused
    assert control.wait_until_running(0)
    assert not control.wait_stopped(0)


def test_stop_wins_over_pause() -> None:
    control = HashControl()
    control.stop()
    control.pause()
    assert control.paused
    assert control.stopped
    assert control.wait_until_running(0)  # a paused loop must not sleep through a stop
    assert control.wait_stopped(0)


@pytest.mark.parametrize("wake", ["resume", "stop"])
def test_paused_waiter_wakes_on_resume_or_stop(wake: str) -> None:
    control = HashControl()
    control.pause()
    woke = threading.Event()
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        if control.wait_until_running(DEADLINE):
            woke.set()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert waiting.wait(DEADLINE)
    assert not woke.is_set()
    getattr(control, wake)()
    assert woke.wait(DEADLINE)
    thread.join(DEADLINE)
