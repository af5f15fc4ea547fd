"""Whether a catalogued file is there, gone, or out of reach for now.

"Gone" is said only when the file system says so: the name is not in a folder
that could be read (``ENOENT``), or a folder on its way is now a file
(``ENOTDIR``). Anything else that stops a look (a folder that cannot be read,
an I/O error, a stale NFS handle, a share or a drive that is not there, a path
too long for the system) leaves the file "unreachable": it may well be there,
and nothing is to be done about it as if it were gone. The scan calls such a
folder unreadable and its files not missing, for the same reason; a worker
tries such a file again after a back-off instead of marking it ``missing``, and
a model whose file is out of reach is not moved to a copy of its content.

Windows reports a missing drive or share, and a path too long, much as it
reports a missing file (Python gives them errno ``ENOENT``); what tells them
apart is its own error number (``winerror``) and whether the drive or share root
(``path_anchor``) is there. The decisions are pure functions of those numbers
(``state_after``, ``too_long``), tested on every system.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType


class FileState(str, enum.Enum):
    PRESENT = "present"
    GONE = "gone"
    UNREACHABLE = "unreachable"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class FileCheck:
    """What a look at a path found; ``reason`` says why it was unreachable."""

    state: FileState
    reason: str | None = None

    @property
    def exists(self) -> bool | None:
        """True or False where that is known; None when the file could not be looked at."""
        return None if self.state is FileState.UNREACHABLE else self.state is FileState.PRESENT


PRESENT = FileCheck(FileState.PRESENT)
GONE = FileCheck(FileState.GONE)

GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})
ERROR_FILENAME_EXCED_RANGE = 206  # Windows: "The filename or extension is too long."
# Windows errors that say the place, not the file, is missing (Python gives some of
# them errno ENOENT): the drive is not there or not ready, the network path or share
# is not there or cannot be reached, the name was deleted on the server, the path is
# too long.
UNREACHABLE_WINERRORS = frozenset(
    {15, 21, 51, 53, 59, 64, 67, ERROR_FILENAME_EXCED_RANGE, 1231, 1232}
)
TOO_LONG = "path too long"


def check_file(path: str) -> FileCheck:
    """Look at ``path`` without following a last symlink and without opening anything."""
    try:
        os.lstat(path)
    except ValueError:  # a NUL in the name: no such file can exist
        return GONE
    except OSError as exc:
        return after_error(path, exc)
    return PRESENT


def after_error(
    path: str,
    exc: OSError,
    *,
    pathmod: ModuleType = os.path,
    exists: Callable[[str], bool] = os.path.exists,
) -> FileCheck:
    """What an ``lstat`` of ``path`` that raised ``exc`` says about the file.

    A file not found under a drive or share root that is itself not there (an
    unmapped drive, a share offline: ``pathmod`` is ``ntpath``) is unreachable.
    """
    code, winerror = exc.errno, getattr(exc, "winerror", None)
    if too_long(code, winerror):
        return FileCheck(FileState.UNREACHABLE, TOO_LONG)
    if state_after(code, winerror) is FileState.UNREACHABLE:
        return FileCheck(FileState.UNREACHABLE, _reason(exc))
    anchor = path_anchor(path, pathmod)  # looked at only where the error says "gone"
    if anchor is not None and not exists(anchor):
        return FileCheck(FileState.UNREACHABLE, f"{anchor} is not there")
    return GONE


def state_after(code: int | None, winerror: int | None = None) -> FileState:
    """What a failed look says of a file, from its ``errno`` and (Windows) ``winerror``
    alone: gone only for "no such file" (or a folder on its way that became a file)
    with no Windows error that blames the place. ``after_error`` then looks at the
    drive or share root of a file that this calls gone."""
    if winerror in UNREACHABLE_WINERRORS or code not in GONE_ERRNOS:
        return FileState.UNREACHABLE
    return FileState.GONE


def too_long(code: int | None, winerror: int | None = None) -> bool:
    """Whether an error says the path is longer than the system opens (POSIX
    ``ENAMETOOLONG``; Windows ``ERROR_FILENAME_EXCED_RANGE``, errno ``ENOENT``)."""
    return code == errno.ENAMETOOLONG or winerror == ERROR_FILENAME_EXCED_RANGE


def too_long_message(path: str) -> str:
    """The one sentence for a path the system cannot open for its length."""
    return (
        f"{TOO_LONG}: {path} ({len(path)} characters), or a name in it, is longer than "
        "this system opens; move or rename the file to a shorter path, or on Windows "
        "turn on long path support."
    )


class NotFound(enum.Enum):
    """What a worker makes of a file it did not find."""

    GONE = "missing"
    AWAY = "tried again after a back-off"  # its drive or share is not there now
    TOO_LONG = "failed at once"


def after_not_found(
    path: str,
    exc: OSError,
    *,
    pathmod: ModuleType = os.path,
    exists: Callable[[str], bool] = os.path.exists,
) -> tuple[NotFound, str]:
    """For a worker: whether a file not found is gone (``missing``), out of reach for
    now (tried again after a back-off), or at a path too long to open (failed at
    once), as Windows says all three with errno ``ENOENT``; and the sentence for
    its row. ``pathmod`` and ``exists`` as in ``after_error``."""
    if too_long(exc.errno, getattr(exc, "winerror", None)):
        return NotFound.TOO_LONG, too_long_message(path)
    found = after_error(path, exc, pathmod=pathmod, exists=exists)
    if found.state is FileState.GONE:
        return NotFound.GONE, f"file not found: {exc.filename or path}"
    return NotFound.AWAY, (
        f"{path} cannot be reached now ({found.reason}); it is not called missing, "
        "and is tried again later"
    )


def path_is_live(path: str) -> bool:
    """Whether the file at ``path`` may still be there: False only when it is gone
    (a link to nothing is gone). A file on a drive or share that is away, or in a
    folder that cannot be read, is not taken for gone: a model there is not moved to
    a copy of its content found elsewhere."""
    try:
        os.stat(path)
    except ValueError:  # a NUL in the name
        return False
    except OSError as exc:
        return after_error(path, exc).state is not FileState.GONE
    return True


def path_anchor(path: str, pathmod: ModuleType = os.path) -> str | None:
    """The drive or share root ``path`` lies on (``'Z:\\'``, ``'\\\\nas\\share\\'``), on a
    system that has them; None for a path without one (every POSIX path: ``/`` is always there)."""
    drive: str = pathmod.splitdrive(path)[0]
    sep: str = pathmod.sep
    return drive + sep if drive else None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
