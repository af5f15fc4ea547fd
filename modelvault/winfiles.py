"""Opening a file on Windows so that others can still move, replace or delete it.

Python's ``open`` and ``os.open`` on Windows share a file for reading and
writing but not for deleting: while a 7 GB model is hashed, Explorer, ComfyUI-
Manager or a downloader that moves, renames, deletes or replaces it gets "The
process cannot access the file because it is being used by another process"
(WinError 32). Files to hash are opened with ``CreateFileW`` sharing read,
write and delete instead, and the handle becomes a C runtime descriptor
(``msvcrt.open_osfhandle``) that ``io.FileIO`` and ``os.fstat`` take as usual.
Whatever another program does meanwhile, the identity check after hashing
(``modelvault.hashing``) sees it and the hash is not recorded.

What is asked of ``CreateFileW`` is a pure function (``create_file_arguments``),
tested on every system; the call itself runs only on Windows.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

__all__ = ["CreateFileArguments", "create_file_arguments", "open_shared"]

# winnt.h / fileapi.h
GENERIC_READ = 0x80000000
FILE_SHARE_READ = 0x1
FILE_SHARE_WRITE = 0x2
FILE_SHARE_DELETE = 0x4
OPEN_EXISTING = 3
FILE_ATTRIBUTE_NORMAL = 0x80
FILE_FLAG_SEQUENTIAL_SCAN = 0x08000000  # read-ahead for a file read from start to end
FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000  # the link itself, not what it points to


class CreateFileArguments(NamedTuple):
    """``dwDesiredAccess``, ``dwShareMode``, ``dwCreationDisposition``, ``dwFlagsAndAttributes``."""

    access: int
    share: int
    disposition: int
    flags: int


def create_file_arguments(*, follow_symlinks: bool = True) -> CreateFileArguments:
    """What a file to hash is opened with: read only, an existing file, shared for
    reading, writing and deleting (others may move or replace it meanwhile), read
    in order; with ``follow_symlinks=False`` a symbolic link is opened itself."""
    flags = FILE_ATTRIBUTE_NORMAL | FILE_FLAG_SEQUENTIAL_SCAN
    if not follow_symlinks:
        flags |= FILE_FLAG_OPEN_REPARSE_POINT
    return CreateFileArguments(
        access=GENERIC_READ,
        share=FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
        disposition=OPEN_EXISTING,
        flags=flags,
    )


if sys.platform == "win32":
    import ctypes
    import msvcrt
    from ctypes import wintypes

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _CreateFileW = _kernel32.CreateFileW
    _CreateFileW.argtypes = [
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.LPVOID,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.HANDLE,
    ]
    _CreateFileW.restype = wintypes.HANDLE
    _CloseHandle = _kernel32.CloseHandle
    _CloseHandle.argtypes = [wintypes.HANDLE]
    _CloseHandle.restype = wintypes.BOOL
    # (HANDLE)-1, as a c_void_p result reads it: an unsigned number, not -1.
    _INVALID_HANDLE_VALUE = ctypes.c_void_p(-1).value

    def open_shared(path: str, *, follow_symlinks: bool = True) -> int:
        """A read-only descriptor of ``path`` that leaves others free to move, replace
        or delete the file; the ``OSError`` of ``CreateFileW`` as Python raises it
        (``FileNotFoundError``, ``PermissionError``... with its ``winerror``)."""
        args = create_file_arguments(follow_symlinks=follow_symlinks)
        # No security attributes: the handle is not inherited (as O_CLOEXEC elsewhere).
        handle = _CreateFileW(
            path, args.access, args.share, None, args.disposition, args.flags, None
        )
        if handle is None or handle == _INVALID_HANDLE_VALUE:
            code = ctypes.get_last_error()
            # With a winerror, OSError picks the errno and the subclass Python would.
            raise OSError(0, ctypes.FormatError(code), path, code)
        try:
            return msvcrt.open_osfhandle(handle, os.O_RDONLY)
        except BaseException:
            _CloseHandle(handle)
            raise

else:

    def open_shared(path: str, *, follow_symlinks: bool = True) -> int:
        """Windows only (see the module docstring); elsewhere ``os.open`` shares anyway."""
        raise NotImplementedError("open_shared is for Windows; use os.open elsewhere")
