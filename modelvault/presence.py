"""Whether a catalogued file is there, gone, or out of reach for now.

"Gone" is said only when the file system says so: the name is not in a folder
that could be read (``ENOENT``), or a folder on its way is now a file
(``ENOTDIR``). Anything else that stops a look (a folder that cannot be read,
an I/O error, a stale NFS handle, a share or a drive that is not there, a path
too long for the system) leaves the file "unreachable": it may well be there,
and nothing is to be done about it as if it were gone. The scan calls such a
folder unreadable and its files not missing, for the same reason.
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
# Windows errors that say the place, not the file, is missing (Python gives some of
# them errno ENOENT): the device is not ready, the network path or share is not
# there or cannot be reached, the name was deleted on the server, the path is too long.
UNREACHABLE_WINERRORS = frozenset({21, 51, 53, 59, 64, 67, 206, 1231, 1232})


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
    if getattr(exc, "winerror", None) in UNREACHABLE_WINERRORS:
        return FileCheck(FileState.UNREACHABLE, _reason(exc))
    if exc.errno not in GONE_ERRNOS:
        return FileCheck(FileState.UNREACHABLE, _reason(exc))
    anchor = path_anchor(path, pathmod)
    if anchor is not None and not exists(anchor):
        return FileCheck(FileState.UNREACHABLE, f"{anchor} is not there")
    return GONE


def path_anchor(path: str, pathmod: ModuleType = os.path) -> str | None:
    """The drive or share root ``path`` lies on (``'Z:\\'``, ``'\\\\nas\\share\\'``), on a
    system that has them; None for a path without one (every POSIX path: ``/`` is always there)."""
    drive: str = pathmod.splitdrive(path)[0]
    sep: str = pathmod.sep
    return drive + sep if drive else None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
