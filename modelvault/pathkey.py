"""One identity key per path: which spellings name the same file.

The catalog compares paths by their key (``models.path_key``,
``pending_import.path_key``), never as they are spelt:

- a POSIX path (``/home/u/models/a.safetensors``) is its own key: names are
  case-sensitive there, and ``/a/B`` and ``/a/b`` are two files;
- a Windows path (one that starts with a drive letter, ``C:``, or with two
  backslashes: a UNC share ``\\\\nas\\share``, a ``\\\\?\\`` long path) is compared
  the way Windows compares it. ``c:\\ComfyUI\\models\\x.ckpt``,
  ``C:/ComfyUI/models/x.ckpt``, ``\\\\?\\C:\\COMFYUI\\models\\x.ckpt`` and
  ``C:\\ComfyUI\\models\\x.ckpt.`` all name one file and have one key: ``/`` and
  ``\\`` are one separator, repeated ones and ``.``/``..`` are resolved, the
  ``\\\\?\\`` and ``\\\\?\\UNC\\`` prefixes are dropped, trailing dots and spaces are
  dropped where Windows drops them (not in a ``\\\\?\\`` path, which Windows takes
  literally), and the case is folded as NTFS folds it (each UTF-16 unit to its
  simple upper case; ``ß`` stays, the Kelvin sign stays apart from ``K``). A
  mapped drive is keyed as the share it is mapped to (``Z:\\models`` and
  ``\\\\nas\\share\\models`` are one folder: ComfyUI builds its folders with
  ``os.path.realpath``, which turns a mapped drive into its UNC path).

Which rules apply depends on the path alone, never on the computer the code
runs on: a catalog shared by several computers (PostgreSQL) and a schema
upgrade run anywhere give each row the same key. Keys are plain text compared
as code points (``COLLATE "C"`` on PostgreSQL), so every folder's keys share a
prefix (``key_prefix``) and sort together. The catalog stores a key only where
it is not the path itself (``stored_key``: None for a POSIX path), so a catalog
of POSIX paths pays nothing for keys (``modelvault.db.keyed`` queries both).

Everything here is pure (``ntpath``/``posixpath`` rules on text), except
``absolute`` (the current folder) and the look-up of what a drive letter is
mapped to, done only on Windows. Tests on
other systems use ``path_rules`` to compare every path as Windows does and to
give drive mappings of their own.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

__all__ = [
    "POSIX",
    "WINDOWS",
    "absolute",
    "device_problem",
    "flavour_of",
    "is_own_key",
    "key_prefix",
    "path_key",
    "path_rules",
    "renamed_below",
    "reserved_device",
    "stored_key",
    "windows_key",
]

WINDOWS: ModuleType = ntpath
POSIX: ModuleType = posixpath

# What a drive letter ("Z:") leads to: the UNC root it is mapped to, or None.
DriveTargets = Callable[[str], "str | None"]

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VERBATIM = "\\\\?\\"  # \\?\C:\... : Windows takes the rest literally
_DEVICE = "\\\\.\\"  # \\.\C:\... : the same file as C:\..., normalised as usual
_UNC_AFTER_PREFIX = "UNC\\"

# Names Windows keeps for devices, in any case, with or without an extension
# ("nul.safetensors" opens the NUL device): opening one reads the console or a
# port, never a file. The superscript digits count too (ntpath.isreserved).
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"}
)


def _no_mapping(drive: str) -> str | None:
    return None


@dataclass(frozen=True)
class _Rules:
    flavour: ModuleType | None  # None: each path's own (see flavour_of)
    drive_target: DriveTargets


if sys.platform == "win32":  # pragma: no cover - runs on Windows only
    import ctypes
    import functools
    from ctypes import wintypes

    _ERROR_CONNECTION_UNAVAIL = 1201  # a remembered mapping, not connected now

    @functools.lru_cache(maxsize=32)
    def _mapped_drive(drive: str) -> str | None:
        """The UNC root a network drive is mapped to (no network access: the
        mapping is read from the system, once per letter in a process), or None
        for a local drive."""
        size = wintypes.DWORD(1024)
        buffer = ctypes.create_unicode_buffer(size.value)
        result = ctypes.WinDLL("mpr").WNetGetConnectionW(drive, buffer, ctypes.byref(size))
        if result in (0, _ERROR_CONNECTION_UNAVAIL) and buffer.value.startswith("\\\\"):
            return str(buffer.value)
        return None

    _rules = _Rules(None, _mapped_drive)
else:
    _rules = _Rules(None, _no_mapping)


@contextmanager
def path_rules(
    flavour: ModuleType | None = None, drives: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Key paths by other rules while the block runs (for tests): ``flavour``
    ``WINDOWS`` compares every path as Windows does (a POSIX path too, as if it
    were written on a drive), ``POSIX`` compares every path as written;
    ``drives`` maps drive letters to the folders they lead to
    (``{"Z:": r"\\\\nas\\share"}``), instead of the system's mappings."""
    global _rules
    before = _rules
    targets = before.drive_target
    if drives is not None:
        table = {letter.rstrip("\\/:").upper() + ":": target for letter, target in drives.items()}
        targets = table.get
    _rules = _Rules(flavour, targets)
    try:
        yield
    finally:
        _rules = before


def is_windows_form(path: str) -> bool:
    """Whether a path is written the Windows way: a drive letter, or a ``\\\\`` start."""
    return (len(path) > 1 and path[1] == ":" and path[0] in _LETTERS) or path.startswith("\\\\")


def absolute(path: str) -> str:
    """``path`` made absolute from the current folder, unless it is a Windows path
    read on another system (``C:\\models`` is absolute where it means anything)."""
    if is_windows_form(path) and os.name != "nt":
        return path
    return os.path.abspath(path)


def flavour_of(path: str) -> ModuleType:
    """The rules ``path`` is compared by: ``WINDOWS`` or ``POSIX``."""
    forced = _rules.flavour
    if forced is not None:
        return forced
    return WINDOWS if is_windows_form(path) else POSIX


def path_key(path: str) -> str:
    """The identity key of ``path`` (see the module's docstring)."""
    key = stored_key(path)
    return path if key is None else key


def stored_key(path: str) -> str | None:
    """What the catalog stores as ``path_key`` for ``path``: its key, or None where
    the path is its own key (a POSIX path: nothing more to store or index)."""
    rules = _rules
    if rules.flavour is None:
        if path[:1] == "/" or not is_windows_form(path):  # "/" first: the common case
            return None
    elif rules.flavour is POSIX:
        return None
    return windows_key(path, rules.drive_target)


def is_own_key(path: str) -> bool:
    """Whether ``path`` (or a folder: every path under it) is its own key."""
    return flavour_of(path) is POSIX


def key_prefix(folder: str) -> str:
    """What the key of every path under ``folder`` starts with (its key and a separator)."""
    if flavour_of(folder) is POSIX:
        return folder.rstrip("/") + "/"
    # With a separator after it, the folder's last name keeps trailing dots and
    # spaces, as it does in the paths of the files under it.
    return windows_key(folder + "\\", _rules.drive_target).rstrip("\\") + "\\"


def windows_key(path: str, drive_target: DriveTargets = _no_mapping) -> str:
    """The key of ``path`` by Windows' rules, ``drive_target`` giving what a
    mapped drive leads to."""
    root, names = _windows_parts(path, drive_target)
    return _fold(root + "\\".join(names))


def renamed_below(old: str, new: str, depth: int | None = None) -> bool:
    """Whether two spellings of one path (equal keys) differ in the case of one of
    their last ``depth`` names (all of them if None): a name on disk that changed
    case (a rename), as opposed to the same names written another way
    (separators, a drive letter's case, a ``\\\\?\\`` prefix, or, with ``depth``,
    the case of a folder above them, as a scan's root was typed)."""
    if flavour_of(new) is POSIX:
        return old != new
    old_names = _windows_parts(old, _rules.drive_target)[1]
    new_names = _windows_parts(new, _rules.drive_target)[1]
    if depth is not None:
        old_names, new_names = old_names[-depth:], new_names[-depth:]
    return old_names != new_names


def device_problem(device: str) -> str:
    """Why a path that names a device (``reserved_device``) is not a file, as the end of
    a sentence about it."""
    return (
        f"names the device {device}, one of the names Windows keeps for devices (CON, PRN, "
        "AUX, NUL, COM1 to COM9, LPT1 to LPT9): opening it would open the device, not a file"
    )


def reserved_device(path: str) -> str | None:
    """The device a Windows path names instead of a file (``CON``, ``NUL``,
    ``COM1``...: ``C:\\models\\nul.safetensors`` is the NUL device), or None."""
    if flavour_of(path) is POSIX:
        return None
    name = path.replace("/", "\\").rstrip("\\").rpartition("\\")[2]
    if len(name) > 1 and name[1] == ":":  # "C:nul": a drive-relative name
        name = name[2:]
    device = name.partition(".")[0].rstrip(" ").upper()
    return device if device in _DEVICE_NAMES else None


def _windows_parts(path: str, drive_target: DriveTargets) -> tuple[str, list[str]]:
    """A Windows path as its root (``C:\\``, ``\\\\nas\\share\\``, or ``""``) and the
    names after it, resolved as Windows resolves them, in their own case."""
    text = path.replace("/", "\\")
    literal = False
    if text.startswith(_VERBATIM) or text.startswith(_DEVICE):
        literal = text.startswith(_VERBATIM)
        rest = text[4:]
        if rest[:4].upper() == _UNC_AFTER_PREFIX:
            text = "\\\\" + rest[4:]
        elif len(rest) > 1 and rest[1] == ":" and rest[0] in _LETTERS:
            text = rest
        else:  # \\?\Volume{...}\, \\.\pipe\...: a device path, kept as it is written
            return "", [text]
    drive, rest = _split_drive(text)
    if len(drive) == 2:
        target = drive_target(drive.upper())
        if target:
            drive, rest = _split_drive(target.replace("/", "\\").rstrip("\\") + rest)
    if drive.startswith("\\\\"):
        root = drive + "\\"  # a share's root is always the share and a separator
    else:
        root = drive + "\\" if rest.startswith("\\") else drive
    return root, _names(rest, literal)


def _split_drive(text: str) -> tuple[str, str]:
    """``text`` (``\\`` separators) as its drive (``C:``, ``\\\\server\\share``, or
    ``""``) and the rest. Written out rather than ``ntpath.splitdrive``, whose
    answers for odd paths changed between Python versions: a stored key must not."""
    if len(text) > 1 and text[1] == ":" and text[0] in _LETTERS:
        return text[:2], text[2:]
    if text.startswith("\\\\"):
        server_end = text.find("\\", 2)
        if server_end < 0:
            return text, ""
        share_end = text.find("\\", server_end + 1)
        if share_end < 0:
            return text, ""
        return text[:share_end], text[share_end:]
    return "", text


def _names(rest: str, literal: bool) -> list[str]:
    """The names of a path after its drive: empty names and ``.`` dropped, ``..``
    taking the name before it back, and unless ``literal`` (a ``\\\\?\\`` path), a
    name's one trailing dot dropped and the last name's trailing dots and spaces
    (as Win32 normalises a path before the file system sees it)."""
    names: list[str] = []
    for name in rest.split("\\"):
        if name in ("", "."):
            continue
        if name == "..":
            if names:
                names.pop()
            continue
        if not literal and name[-1] == "." and name[-2:] != "..":
            name = name[:-1]
        names.append(name)
    if not literal and names and not rest.endswith("\\"):
        last = names[-1].rstrip(". ")
        if last:
            names[-1] = last
        else:
            names.pop()
    return names


def _fold(text: str) -> str:
    """Case-folded as NTFS compares names: each UTF-16 unit to its simple upper
    case (characters outside the Basic Multilingual Plane are left as they are,
    and so are those whose upper case is more than one character: ``ß``)."""
    if text.isascii():
        return text.upper()
    return "".join(
        upper if len(upper := char.upper()) == 1 and char <= "\uffff" else char for char in text
    )
