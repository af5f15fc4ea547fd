"""Whether a folder is on a network file system, where SQLite's WAL must not be used.

SQLite's write-ahead log keeps its index in memory shared by the processes of
one computer (the ``-shm`` file), and network file systems do not share it,
nor keep file locks reliably: SQLite's documentation says WAL "does not work
over a network filesystem". A SQLite catalog there is kept in rollback-journal
mode (``journal_mode_for``); several computers should share a PostgreSQL
catalog instead.

The decisions are pure functions over what the system reports (Linux's
``/proc/self/mountinfo``, Windows' ``GetDriveTypeW``), so both are tested on
any system; the system calls themselves are a few lines at the bottom.
"""

from __future__ import annotations

import ntpath
import os
import re
import sys
from collections.abc import Callable

from modelvault.db.sqlite_files import without_long_prefix

# Linux file system types (mountinfo's field after " - ") of shares and of the
# FUSE and VM mounts that reach files over a network or a hypervisor.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",  # WSL2's /mnt/c, QEMU shares
        "drvfs",  # WSL1's /mnt/c
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "vboxsf",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.davfs2",
        "fuse.glusterfs",
        "fuse.vmhgfs-fuse",
    }
)
DRIVE_REMOTE = 4  # GetDriveTypeW: a network drive (a mapped letter)

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def network_filesystem(
    folder: str | os.PathLike[str],
    *,
    platform: str = sys.platform,
    mountinfo: str | None = None,
    drive_type: Callable[[str], int] | None = None,
) -> str | None:
    """What network file system ``folder`` is on (``"nfs4"``, ``"a network
    share"``, ...), or None on a local disk or where it cannot be told (macOS).

    ``mountinfo`` (Linux) and ``drive_type`` (Windows) stand in for the system
    when given.
    """
    path = os.fspath(folder)
    if platform == "win32":
        return windows_network_drive(path, drive_type or _drive_type)
    if platform.startswith("linux"):
        if mountinfo is None:
            mountinfo = _read_mountinfo()
            path = os.path.realpath(path)
        fstype = filesystem_of(path, mountinfo)
        return fstype if fstype in NETWORK_FILESYSTEMS else None
    return None


def filesystem_of(path: str, mountinfo: str) -> str | None:
    """The type of the file system ``path`` (absolute, links resolved) is on: the
    mount whose mount point is the longest leading part of it (the last such
    mount when several share a point, as a later mount hides an earlier one)."""
    best: tuple[int, str] | None = None
    for mount_point, fstype in mounts(mountinfo):
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) >= best[0]):
            best = (len(mount_point), fstype)
    return best[1] if best else None


def mounts(mountinfo: str) -> list[tuple[str, str]]:
    """``(mount point, file system type)`` of each line of ``/proc/self/mountinfo``."""
    found = []
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        after = rest.split()
        if len(parts) >= 5 and after:
            mount_point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), parts[4])
            found.append((mount_point, after[0]))
    return found


def windows_network_drive(path: str, drive_type: Callable[[str], int]) -> str | None:
    """A UNC path (``\\\\nas\\share\\...``) or a drive letter Windows calls remote
    (a mapped network drive)."""
    text = without_long_prefix(path)
    if text[:2] in ("\\\\", "//"):
        return "a network share"
    drive = ntpath.splitdrive(text)[0]
    if drive and drive_type(drive + "\\") == DRIVE_REMOTE:
        return f"a network drive ({drive.upper()})"
    return None


def _read_mountinfo() -> str:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as src:
            return src.read()
    except OSError:
        return ""  # no /proc (a sandbox): nothing known, so nothing is called a share


def _drive_type(root: str) -> int:  # pragma: no cover - Windows only
    import ctypes

    windll = getattr(ctypes, "windll", None)
    return int(windll.kernel32.GetDriveTypeW(root)) if windll else 0


def journal_mode_for(filesystem: str | None) -> str:
    """WAL on a local disk; the rollback journal on a network file system."""
    return "DELETE" if filesystem else "WAL"
