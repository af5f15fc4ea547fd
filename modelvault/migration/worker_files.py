"""What a staged path and a failed read say about a row: never hashable, worth a
retry, or failed for good (the rules of the table in ``migration.worker``)."""

from __future__ import annotations

import errno
import os
import stat

from modelvault.errors import HashingError, NotRegularFileError
from modelvault.normalize import is_absolute_path
from modelvault.pathkey import device_problem, reserved_device
from modelvault.presence import too_long, too_long_message

__all__ = ["PERMANENT_ERRNOS", "classify_os_error", "describe_os_error", "path_problem", "size_now"]


def size_now(path: str) -> int:
    """The size of the regular file at ``path``; 0 for anything else, or if it cannot be
    stat-ed (hashing says why). A stat opens nothing: a FIFO or a device cannot block it."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def describe_os_error(exc: OSError) -> str:
    """One line for ``last_error``: what failed, without a traceback."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {reason}"


# What no retry can cure: the path itself is wrong (too long, a symlink loop, a
# file where a folder should be, a folder where a file should be).
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR})


def classify_os_error(exc: OSError) -> tuple[str, bool]:
    """``(message, permanent)`` for a failed attempt at hashing a file.

    Permanent (``failed`` at once): not a regular file, and the errnos in
    ``PERMANENT_ERRNOS``. Everything else is worth a retry after a back-off: an
    I/O error, a stale NFS handle, a file that changed while it was read, a
    permission that may be granted (``FileNotFoundError`` is ``missing``, handled
    before this).
    """
    if isinstance(exc, HashingError):  # our own sentence: which file, what is wrong
        return str(exc), isinstance(exc, NotRegularFileError)
    if too_long(exc.errno, getattr(exc, "winerror", None)):
        return too_long_message(str(exc.filename or "the path")), True
    return describe_os_error(exc), exc.errno in PERMANENT_ERRNOS


def path_problem(path: str) -> str | None:
    """Why a staged path can never be hashed, before anything touches it; None if it may be."""
    if "\0" in path:
        return f"{path!r} contains a NUL character, which no file name can hold."
    # "/" first: the common case, without is_absolute_path's path parsing. A Windows
    # path on Linux is absolute: it ends missing.
    if not path.startswith("/") and not is_absolute_path(path):
        return (
            f"{path} is a relative path: it depends on the folder the worker runs in; "
            "stage the file by its absolute path."
        )
    device = reserved_device(path)
    if device is not None:  # opening it would read the device (CON: the console) forever
        return f"{path} {device_problem(device)}; rename the file and stage it again."
    return None
