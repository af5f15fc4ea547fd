"""The private copies of legacy files in the temporary folder, named for their process.

A WAL-mode legacy file is read from a copy in a new folder of the temporary
folder (see ``modelvault.legacy.reader``), as big as the legacy catalog
(56 MB for 200,000 rows). The copy is removed when the import ends, however
it ends: an error, Ctrl-C, SIGTERM. A process killed outright (``kill -9``, a
crash, a power cut) cannot remove it, so each folder is named for the process
that made it: ``modelvault-legacy_<host>_<pid>_<start>_<random>``, the host,
pid and start token as in lease owner names (``modelvault.queue.owner``).
Every opening of a legacy file removes the folders left by processes of this
host that are provably gone, and never one of a process that may still run
(another host, another boot or container, a process that cannot be judged).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import NamedTuple

from modelvault.queue import owner

__all__ = ["PREFIX", "Maker", "maker_of", "new_folder", "sweep"]

log = logging.getLogger(__name__)

PREFIX = "modelvault-legacy_"
# The parts of the name, none of which can hold "_" (the host's is made so).
_NAME = re.compile(PREFIX + r"(?P<host>[A-Za-z0-9.-]+)_(?P<pid>[0-9]+)_(?P<token>[A-Za-z0-9.]*)_")


class Maker(NamedTuple):
    """The process a copy's folder is named for."""

    host: str
    pid: int
    token: str


def _host() -> str:
    """This host's name as folder names carry it: letters, digits, '.' and '-' only."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", owner.host_name())[:60] or "-"


def new_folder(parent: str | os.PathLike[str] | None = None) -> Path:
    """A new private folder (mode 0700) in ``parent`` (the temporary folder),
    named for this process."""
    pid = os.getpid()
    prefix = f"{PREFIX}{_host()}_{pid}_{owner.start_token(pid)}_"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def maker_of(name: str) -> Maker | None:
    """The process a folder named ``name`` was made for; None if it is not such a folder."""
    match = _NAME.match(name)
    if match is None:
        return None
    return Maker(match["host"], int(match["pid"]), match["token"])


def sweep(parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the copies in ``parent`` (the temporary folder) left by processes of
    this host that are provably gone; returns the folders removed."""
    folder = Path(parent if parent is not None else tempfile.gettempdir())
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(PREFIX)]
    except OSError:  # no temporary folder to look in: nothing can be left there
        return []
    removed = []
    for entry in entries:
        maker = maker_of(entry.name)
        if maker is None or maker.host != _host() or not _ours(entry):
            continue
        if owner.process_gone(maker.pid, maker.token):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
            log.info("removed %s, the copy of a legacy catalog a killed run left", entry.path)
    return removed


def _ours(entry: os.DirEntry[str]) -> bool:
    """A real folder (not a link), owned by this user where the system says."""
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    return not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
