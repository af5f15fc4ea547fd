"""Whether a file is still the one recorded, told from its ``stat`` alone.

A file's stamp is its size and mtime and, where the system gives them a
meaning, its inode change time (``st_ctime_ns``) and inode number. The mtime
can be put back by anyone (``os.utime``, ``touch -d``, ``rsync --inplace -t``, a
restore), so a file rewritten in place with the same size and its mtime put
back would pass for unchanged on those two alone; the change time cannot be set
by a user and moves on every write (and every rename, chmod or new hard link:
those cost one needless re-read, never a wrong hash). The inode number tells a
file put in place of another (``mv new.bin model.bin``).

On Windows ``st_ctime`` is the creation time (Python 3.12 deprecates that
meaning and names it ``st_birthtime``): a write does not move it, and its value
could change meaning with the Python in use, so there it is not compared; the
stamp is size, mtime and, where the system gives one, the file index
(``st_ino``). A folder listing on Windows gives no file index, so a scan there
compares size and mtime; hashing compares the file index too.

The catalog keeps size and mtime in columns (``models.size_bytes``,
``models.mtime_ns``; a staging row's mtime in ``meta["scan_mtime_ns"]``) and the
rest in ``meta["file_stat"]`` (``{"ctime_ns": ..., "ino": ...}``). A record made
before these were kept has none: a file found with the recorded size and mtime
is then taken as unchanged, and the change time and inode it has now are
recorded (``Verdict.STAMP``), so a catalog of an older version is not read again
whole on its first scan, and a later hidden rewrite is caught.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "FILE_STAT",
    "FileStamp",
    "Verdict",
    "compare",
    "moved_intact",
    "recorded_stamp",
    "stamp_of",
    "stat_marks",
]

WINDOWS = sys.platform == "win32"
# The meta key of what has no column: {"ctime_ns": int, "ino": int}, each where known.
FILE_STAT = "file_stat"


class FileStamp(NamedTuple):
    """What tells one state of a file from another without reading it; None: not known."""

    size: Any  # an int, or whatever a record holds (a value from meta may be anything)
    mtime_ns: Any
    ctime_ns: int | None = None
    ino: int | None = None


class Verdict(enum.Enum):
    SAME = "same"
    CHANGED = "changed"
    STAMP = "same, with a change time or inode not recorded yet"  # record them now


def stamp_of(st: os.stat_result, *, windows: bool = WINDOWS) -> FileStamp:
    """The stamp of a file from its ``stat`` (inode 0 means the system gives none)."""
    return FileStamp(
        st.st_size, st.st_mtime_ns, None if windows else st.st_ctime_ns, st.st_ino or None
    )


def compare(recorded: FileStamp, found: FileStamp) -> Verdict:
    """Whether a file ``found`` now is the one ``recorded``.

    Size and mtime must match; the change time and inode must match where both
    sides know them. Where only ``found`` knows one, the file is the same and
    that value is to be recorded (``Verdict.STAMP``).
    """
    if recorded.size != found.size or recorded.mtime_ns != found.mtime_ns:
        return Verdict.CHANGED
    ctime, ino = _part(recorded.ctime_ns, found.ctime_ns), _part(recorded.ino, found.ino)
    if ino is Verdict.CHANGED and _renumbered(recorded, found):
        ino = Verdict.STAMP
    if Verdict.CHANGED in (ctime, ino):
        return Verdict.CHANGED
    return Verdict.STAMP if Verdict.STAMP in (ctime, ino) else Verdict.SAME


def _part(mine: int | None, now: int | None) -> Verdict:
    """One part of a stamp: SAME where the file gives none, STAMP where only the
    file knows it (to be recorded), else whether the two agree."""
    if now is None:
        return Verdict.SAME
    if mine is None:
        return Verdict.STAMP
    return Verdict.SAME if mine == now else Verdict.CHANGED


def _renumbered(recorded: FileStamp, found: FileStamp) -> bool:
    """Whether only the inode number differs, with the change time known on both
    sides and the same: the file system numbered the same file anew (FAT, exFAT
    and FUSE mounts such as sshfs do at every mount). A file put in place of
    another has a change time of its own, so that is still caught."""
    return recorded.ctime_ns is not None and recorded.ctime_ns == found.ctime_ns


def moved_intact(recorded: FileStamp, found: FileStamp) -> bool:
    """Whether a file found under a new name is the recorded one, unchanged: size,
    mtime and inode (where both know it) the same. The change time is not
    compared: a rename moves it."""
    same_inode = recorded.ino is None or found.ino is None or recorded.ino == found.ino
    return recorded.size == found.size and recorded.mtime_ns == found.mtime_ns and same_inode


def stat_marks(stamp: FileStamp) -> dict[str, int]:
    """The value of ``meta["file_stat"]`` for a stamp: the parts it knows."""
    marks: dict[str, int] = {}
    if stamp.ctime_ns is not None:
        marks["ctime_ns"] = stamp.ctime_ns
    if stamp.ino is not None:
        marks["ino"] = stamp.ino
    return marks


def recorded_stamp(size: Any, mtime_ns: Any, meta: Any) -> FileStamp:
    """The stamp a record holds: its size and mtime, and ``meta["file_stat"]``.

    A ``file_stat`` that is not what this module writes (edited by hand) counts
    as not recorded: it is written again, never trusted.
    """
    marks = meta.get(FILE_STAT) if isinstance(meta, Mapping) else None
    if not isinstance(marks, Mapping):
        return FileStamp(size, mtime_ns)
    return FileStamp(size, mtime_ns, _whole(marks.get("ctime_ns")), _whole(marks.get("ino")))


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
