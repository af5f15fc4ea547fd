"""The walk of one scan root: its model files in the order of their identity keys.

A folder is listed once, however many symlinks lead to it; one that leads
back to a folder being walked is a loop. A folder that is a scan root of its
own is left to that root (the deepest root decides a file's type). Files that
can never be catalogued (a name that is not UTF-8, a FIFO, socket or device, an
empty file, a link to nothing) come out with the reason they are skipped, so
the catalog's model at such a path is not called missing.

Each file comes with its path's identity key (``modelvault.pathkey``), and the
files come in the order of those keys (on POSIX, of the paths themselves): the
order the catalog's rows are read in, so the two are merged like sorted lists.
Where a folder holds two names with one key (names that differ only in case,
which Windows cannot tell apart), the second is skipped, saying why.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from types import ModuleType
from typing import NamedTuple

from modelvault.file_stamp import WINDOWS, FileStamp
from modelvault.normalize import known_folder_type, model_type_for_folder
from modelvault.pathkey import (
    POSIX,
    device_problem,
    flavour_of,
    key_prefix,
    path_key,
    reserved_device,
)
from modelvault.scan.report import FileChange, ScanReport
from modelvault.scan.sources import ScanRoot

__all__ = [
    "MODEL_EXTENSIONS",
    "FolderKey",
    "FoundFile",
    "RootWalk",
    "folder_identity",
    "folder_key",
    "storable",
]

# What a model file is called: ComfyUI's own list (folder_paths.supported_pt_extensions)
# and the formats other loaders of this field read (.gguf, .onnx). Anything else in
# a model folder (configs, previews, readmes) is not a model.
MODEL_EXTENSIONS = frozenset(
    {".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".pkl", ".gguf", ".onnx"}
)
# Downloads still in progress (browsers, download managers, partial copies).
# Their names end in one of these, so the extension check already leaves them
# out; they are counted so the report can say why a file was not taken.
PARTIAL_SUFFIXES = frozenset(
    {".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".incomplete", ".aria2"}
)
# aria2 keeps "<file>.aria2" beside a file it is still writing.
ARIA2_CONTROL = ".aria2"
# A folder of this name right under a folder that names no type passes that on:
# the web UI's and ComfyUI's own folders hold their model folders in models/.
MODELS_FOLDER = "models"
NOT_UTF8 = "its name is not valid UTF-8, which a catalog cannot store: rename it"
SAME_KEY = (
    "its name differs only in case from another one in its folder, which Windows "
    "cannot tell apart: rename one of them"
)

FolderKey = tuple[int, int | str]
Changes = Callable[[FileChange], None]
# A folder's listing: each entry, whether it is a folder, its key (a file's path's;
# for a folder, unused), and why it is skipped (a name Windows cannot open).
Listing = Iterator[tuple[os.DirEntry[str], bool, str, str | None]]


class FoundFile(NamedTuple):
    path: str
    size: int
    mtime_ns: int
    type: str
    skip: str | None = None  # why the file cannot be catalogued
    key: str = ""  # the identity key of its path (modelvault.pathkey)
    ctime_ns: int | None = None  # the rest of its stamp, where known (modelvault.file_stamp)
    ino: int | None = None

    @property
    def stamp(self) -> FileStamp:
        return FileStamp(self.size, self.mtime_ns, self.ctime_ns, self.ino)

    @classmethod
    def of(
        cls, path: str, st: os.stat_result, type: str, skip: str | None = None, key: str = ""
    ) -> FoundFile:
        """The file at ``path`` as its ``stat`` shows it: what ``stamp_of`` takes, taken
        here without a stamp in between (once per file of a scan). A folder listing on
        Windows gives no inode: there the stamp is size and mtime."""
        ctime = None if WINDOWS else st.st_ctime_ns
        return cls(path, st.st_size, st.st_mtime_ns, type, skip, key, ctime, st.st_ino or None)


def folder_identity(
    st_dev: int, st_ino: int, real_path: str | None, flavour: ModuleType = os.path
) -> FolderKey:
    """What tells one folder from another: ``(st_dev, st_ino)``, or, where the file
    system reports inode 0 for every folder (WinFsp mounts such as rclone and
    sshfs-win, Google Drive), the folder's real path in normal form
    (``flavour.normcase`` of ``flavour.normpath``: case-folded with ``\\`` on
    Windows), so that subfolders are not taken for the same folder."""
    if st_ino:
        return st_dev, st_ino
    if real_path is None:
        raise ValueError("a folder with inode 0 needs its real path to be told apart")
    return st_dev, flavour.normcase(flavour.normpath(real_path))


def folder_key(path: str) -> FolderKey:
    """``folder_identity`` of the folder at ``path`` (``OSError`` if it cannot be looked at)."""
    st = os.stat(path)
    return folder_identity(st.st_dev, st.st_ino, None if st.st_ino else os.path.realpath(path))


def storable(name: str) -> bool:
    """Whether a catalog can store this name: text that is valid UTF-8 (PostgreSQL
    refuses lone surrogates; SQLite would keep bytes that read back as others)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_A_FILE = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def file_problem(st: os.stat_result) -> str | None:
    """Why a model-named file cannot be catalogued, judged from its ``stat``; or None."""
    if not stat.S_ISREG(st.st_mode):
        kind = NOT_A_FILE.get(stat.S_IFMT(st.st_mode), "not a regular file")
        return f"{kind}, not a model file"
    if st.st_size == 0:
        return "an empty file"
    return None


@dataclass
class _Frame:
    entries: Listing
    type: str | None  # None where no folder has named a type yet
    key: FolderKey


@dataclass
class RootWalk:
    """One root's walk: what it skipped (so those files are not called missing).

    ``visited`` is shared by the walks of one scan; ``roots`` maps the folders
    that are roots of the scan to their paths.
    """

    report: ScanReport
    visited: set[FolderKey]
    roots: dict[FolderKey, str]
    on_change: Changes | None = None
    unseen: list[str] = field(default_factory=list)  # key prefixes of folders not listed

    def files(self, root: ScanRoot) -> Iterator[FoundFile]:
        """Model files under ``root``, in the order of their keys.

        Iterative (a stack of folder listings, no recursion limit).
        """
        top = os.path.abspath(root.path)
        if not storable(top):
            self.skip_folder(top, NOT_UTF8)
            return
        try:
            key = folder_key(top)
        except OSError as exc:
            self.unreadable(top, exc, root.origin)
            return
        if key in self.visited:
            self.skip_folder(top, "inside a folder scanned already")
            return
        first = self._listing(top, root.origin)
        if first is None:
            return
        self.visited.add(key)
        root_type = root.type or known_folder_type(os.path.basename(top))
        stack = [_Frame(first, root_type, key)]
        while stack:
            frame = stack[-1]
            item = next(frame.entries, None)
            if item is None:
                stack.pop()
            elif not item[1]:
                found = self._file(item[0], frame.type or "other", item[2], item[3])
                if found is not None:
                    yield found
            else:
                child = self._enter(item[0], stack, item[3])
                if child is not None:
                    stack.append(_Frame(child[1], _child_type(frame.type, item[0].name), child[0]))

    def _enter(
        self, entry: os.DirEntry[str], stack: list[_Frame], why: str | None
    ) -> tuple[FolderKey, Listing] | None:
        if why is not None:  # its files are another folder's keys: not unseen, not gone
            self.report.note(self.report.skipped, f"{entry.path}: {why}")
            self._changed(entry.path, why)
            return None
        if not storable(entry.name):
            self.skip_folder(entry.path, NOT_UTF8)
            return None
        try:
            key = folder_key(entry.path)
        except OSError as exc:
            self.unreadable(entry.path, exc)
            return None
        if key in self.roots:  # a root of this scan: walked as that root
            self.unseen.append(key_prefix(entry.path))
            return None
        if key in self.visited:
            if any(frame.key == key for frame in stack):
                self.report.note(self.report.loops, f"{entry.path} leads back to a parent folder")
                self.unseen.append(key_prefix(entry.path))
            else:
                self.skip_folder(entry.path, "a second link to a folder scanned already")
            return None
        listing = self._listing(entry.path)
        if listing is None:
            return None
        self.visited.add(key)
        return key, listing

    def _listing(self, folder: str, origin: str | None = None) -> Listing | None:
        """The visible entries of a folder, sorted so that files come out in key order."""
        try:
            with os.scandir(folder) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError as exc:
            self.unreadable(folder, exc, origin)
            return None
        names = {e.name for e in entries}
        chosen: list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir and not self._is_model(entry.name, names):
                continue
            # A folder sorts as the prefix of its files' paths or keys ("<name>/"): with
            # the separator in it, the walk's order is exactly the order of the keys.
            chosen.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        if flavour_of(folder) is POSIX:  # each path its own key: in the order of the names
            chosen.sort(key=itemgetter(0))
            return ((entry, is_dir, entry.path, None) for _, entry, is_dir in chosen)
        keyed = [
            (key_prefix(entry.path) if is_dir else path_key(entry.path), entry.name, entry, is_dir)
            for _, entry, is_dir in chosen
        ]
        keyed.sort()  # names of one key in code point order (entries are never compared)
        return self._distinct(key_prefix(folder), keyed)

    @staticmethod
    def _distinct(prefix: str, kept: list[tuple[str, str, os.DirEntry[str], bool]]) -> Listing:
        """The sorted entries, those Windows could not open by their name with the
        reason: a second name with the key of the one before it (the two differ
        only in case), a name whose key leaves the folder (dots and spaces), a
        file named after a device (never looked at: that would open the device)."""
        before = None
        for key, _, entry, is_dir in kept:
            device = None if is_dir else reserved_device(entry.path)
            if key == before:
                yield entry, is_dir, key, SAME_KEY
            elif not key.startswith(prefix):  # out of the walk's order: no key at all
                yield entry, is_dir, "", "Windows cannot open a name of dots and spaces: rename it"
            elif device is not None:
                yield entry, is_dir, key, f"its name {device_problem(device)}; rename it"
            else:
                before = key
                yield entry, is_dir, key, None

    def _is_model(self, name: str, siblings: set[str]) -> bool:
        dot = name.rfind(".")  # (os.path.splitext costs more than the stat on a big tree)
        suffix = name[dot:].lower() if dot > 0 else ""
        if suffix in PARTIAL_SUFFIXES:
            self.report.partial_downloads += 1
            return False
        if suffix not in MODEL_EXTENSIONS:
            return False
        if name + ARIA2_CONTROL in siblings:  # still being downloaded
            self.report.partial_downloads += 1
            return False
        return True

    def _file(
        self, entry: os.DirEntry[str], kind: str, key: str, why: str | None
    ) -> FoundFile | None:
        if why is not None:
            return FoundFile(entry.path, 0, 0, kind, why, key)
        if not storable(entry.name):
            return FoundFile(entry.path, 0, 0, kind, NOT_UTF8, key)
        try:
            st = entry.stat()
        except OSError as exc:
            if not entry.is_symlink():
                return None  # removed while we looked
            why = "a link to nothing" if isinstance(exc, FileNotFoundError) else exc.strerror
            return FoundFile(entry.path, 0, 0, kind, why or str(exc), key)
        return FoundFile.of(entry.path, st, kind, file_problem(st), key)

    def unreadable(self, folder: str, exc: OSError, origin: str | None = None) -> None:
        listed = f" (listed in {origin})" if origin else ""
        self.report.note(self.report.unreadable, f"{folder}: {exc.strerror or exc}{listed}")
        self.unseen.append(key_prefix(folder))
        self._changed(folder, f"cannot be listed: {exc.strerror or exc}{listed}")

    def skip_folder(self, folder: str, why: str) -> None:
        self.report.note(self.report.skipped, f"{folder}: {why}")
        self.unseen.append(key_prefix(folder))
        self._changed(folder, why)

    def _changed(self, path: str, why: str) -> None:
        if self.on_change is not None:
            self.on_change(FileChange("skipped", path, why=why))

    def passed_unseen(self, key: str) -> bool:
        """Whether the path of ``key`` lies in a folder this walk did not list."""
        return any(key.startswith(prefix) for prefix in self.unseen)


def _child_type(parent_type: str | None, name: str) -> str | None:
    """The type a subfolder gives its files: its parent's, else its own name's."""
    if parent_type is not None:
        return parent_type
    if name.lower() == MODELS_FOLDER:
        return None
    return model_type_for_folder(name)
