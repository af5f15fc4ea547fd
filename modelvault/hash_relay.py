"""The relay that hashes one file in two threads (see ``modelvault.hashing``).

While one thread hashes its chunk, the other reads the next one into its own
buffer, then they swap roles; the hash object passes between them with
``threading.Event`` turns, so chunks enter it strictly in file order.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelvault.hash_lane import Lane

if TYPE_CHECKING:
    from hashlib import _Hash

    from modelvault.hashing import ChunkTap


def advise_sequential(handle: io.FileIO) -> None:
    # Doubles the kernel's read-ahead on spinning disks; a hint only, so failures don't matter.
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)


def _read_at(handle: io.FileIO, offset: int, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``offset``; fewer bytes only at the end of the file."""
    handle.seek(offset)
    return _fill(handle, buffer)


def _fill(handle: io.FileIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from the handle's position; fewer bytes only at the end of the file."""
    filled = 0
    while filled < len(buffer):
        # Network filesystems may return short reads before the end: only 0 means EOF.
        n = handle.readinto(buffer[filled:])
        if not n:
            break
        filled += n
    return filled


class _Turns:
    """What the two threads of one relay share."""

    def __init__(self) -> None:
        # turn[0] set: the calling thread may update the hash; turn[1]: the helper may.
        self.turn = (threading.Event(), threading.Event())
        self.turn[0].set()
        self.finished = False  # the last chunk is hashed, or the caller gave up
        self.helper_bytes = 0  # hashed by the helper, not yet reported by the caller
        self.helper_error: BaseException | None = None


class Sink:
    """Where a relay's chunks go: the hash, then the tap and the lane beside, if any."""

    def __init__(self, sha: _Hash, tap: ChunkTap | None, lane: Lane | None = None) -> None:
        self._sha = sha
        self._tap = tap
        self._lane = lane

    def update(self, chunk: memoryview) -> None:
        self._sha.update(chunk)
        if self._tap is not None:
            self._tap.take(chunk)
        if self._lane is not None:
            self._lane.give(chunk)

    def release(self, buffer: memoryview) -> None:
        """Before ``buffer`` is filled again: the lane must be done with what it held."""
        if self._lane is not None:
            self._lane.release(buffer)

    def close(self, *, drop: bool = False) -> None:
        if self._lane is not None:
            self._lane.close(drop=drop)


def relay(
    mine: io.FileIO,
    theirs: io.FileIO,
    sha: Sink,
    chunk: int,
    size: int,
    checkpoint: Callable[[], None],
    report: Callable[[int], None],
) -> int:
    """Hash chunks 0, 2, 4... here and 1, 3, 5... in a helper thread; return the bytes hashed.

    Ends at the first short chunk (the end of the file), or once more than
    ``size`` bytes are hashed (the file grows: the caller reports it changed).
    """
    turns = _Turns()
    helper = threading.Thread(
        target=_helper_lane, args=(theirs, sha, chunk, turns), name="modelvault-hash", daemon=True
    )
    helper.start()
    buffer = memoryview(bytearray(chunk))
    offset = total = 0
    try:
        while True:
            sha.release(buffer)
            n = _read_at(mine, offset, buffer)
            turns.turn[0].wait()
            turns.turn[0].clear()
            if turns.helper_error is not None:
                raise turns.helper_error
            theirs_done, turns.helper_bytes = turns.helper_bytes, 0
            total += theirs_done
            if turns.finished or total > size:
                report_some(report, theirs_done)
                return total
            checkpoint()  # may block while paused: we hold the turn, so the helper waits too
            sha.update(buffer[:n])
            total += n
            last = n < chunk  # a local: the helper may set turns.finished meanwhile
            if last:
                turns.finished = True
            else:
                turns.turn[1].set()  # the helper hashes its chunk while we report and read
            report_some(report, theirs_done)
            report_some(report, n)
            if last:
                return total
            offset += 2 * chunk
    finally:
        turns.finished = True
        turns.turn[1].set()
        helper.join()


def _helper_lane(handle: io.FileIO, sha: Sink, chunk: int, turns: _Turns) -> None:
    buffer = memoryview(bytearray(chunk))
    offset = chunk
    try:
        while True:
            sha.release(buffer)
            n = _read_at(handle, offset, buffer)
            turns.turn[1].wait()
            turns.turn[1].clear()
            if turns.finished:
                return
            sha.update(buffer[:n])
            turns.helper_bytes += n
            last = n < chunk
            if last:
                turns.finished = True
            turns.turn[0].set()
            if last:
                return
            offset += 2 * chunk
    except BaseException as exc:  # hand every failure to the caller, or it would wait forever
        turns.helper_error = exc
        turns.turn[0].set()


def report_some(report: Callable[[int], None], n: int) -> None:
    if n:  # 0 is reserved for heartbeats
        report(n)
