"""Preview images: the catalog's content-addressed store, and their migration.

The store is a folder owned by the catalog (``DatabaseManager.images_dir``):
each image is kept once, as ``<sha256>.<ext>`` (the SHA-256 of its bytes, the
lower-case extension of the name it came with), written atomically (a temporary
file in the store folder, fsync, rename, fsync of the folder) and read back to
check it. Images never go into the database; a model's ``meta.previews`` lists
its images as ``{"sha256", "file", "source"}``.

The legacy app kept previews in the folder ``images/`` beside its database and
named them in ``extra_json.images`` by URLs ``/media/<file>``. ``LegacyImages``
copies each image a row names into the store. The legacy folder is only ever
read: a file is checked with ``stat`` before it is opened, opened read-only and
non-blocking (a FIFO cannot hang the import), and never changed or moved. Only
a plain file name directly in that folder is taken from a URL: ``..``, folders,
absolute paths and links leading out of the folder are refused.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from modelvault.catalog.values import LEGACY, PREVIEWS
from modelvault.db.engine import sqlite_file
from modelvault.errors import (
    ConfigError,
    FileChangedError,
    ImageStoreError,
    NotRegularFileError,
    ValidationError,
)
from modelvault.hashing import open_regular_file

MEDIA_PREFIX = "/media/"  # how the legacy app's URLs name a file of its images folder
LEGACY_IMAGES_FOLDER = "images"  # beside the legacy database
STORE_FOLDER = "images"  # the default store: beside a SQLite catalog file
MAX_LISTED = 100  # missing and unreferenced files listed in the report (all are counted)
CHUNK = 1 << 20
_EXTENSION = re.compile(r"[a-z0-9]{1,10}")
_NOT_PLAIN = re.compile(r"[/\\:\x00]")  # a folder, a drive, or NUL: not a plain file name
_STORED_NAME = re.compile(r"[0-9a-f]{64}(\.[a-z0-9]{1,10})?")


class _SourceProblem(Exception):
    """An image of the legacy folder that cannot be taken (the reason is the message)."""


def default_store(url: URL, configured: Path | None) -> Path | None:
    """The store of the catalog at ``url``: the configured folder, else ``images/``
    beside a SQLite catalog file; None for any other catalog (PostgreSQL,
    in-memory SQLite), which needs ``MODELVAULT_IMAGES_DIR``."""
    if configured is not None:
        return configured
    file = sqlite_file(url)
    return None if file is None else Path(file).absolute().parent / STORE_FOLDER


def is_stored_name(name: object) -> bool:
    """Whether ``name`` is a file name the store writes (``<sha256>`` or ``<sha256>.<ext>``)."""
    return isinstance(name, str) and _STORED_NAME.fullmatch(name) is not None


def stored_name(sha256: str, source_name: str) -> str:
    """``<sha256>.<ext>``, the extension taken from the source name (lower case, at
    most 10 letters or digits; none at all if it has no such extension)."""
    _, dot, ext = source_name.rpartition(".")
    ext = ext.lower()
    return f"{sha256}.{ext}" if dot and _EXTENSION.fullmatch(ext) else sha256


def media_file(url: object) -> str | None:
    """The file a legacy ``/media/<file>`` URL names, or None for any other URL.

    Raises ``ValidationError`` for a media URL that is not a plain file name
    (``..``, a folder, an absolute or drive path, NUL).
    """
    if not isinstance(url, str) or not url.startswith(MEDIA_PREFIX):
        return None
    name = url[len(MEDIA_PREFIX) :]
    if name in ("", ".", "..") or _NOT_PLAIN.search(name):
        raise ValidationError(f"{url!r} does not name a file directly in the images folder")
    return name


def check_image_folders(
    legacy_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None,
    store: Path | None,
    catalog: str,
) -> Path:
    """The legacy images folder to read, checked before anything is written.

    ``images_dir`` given but not a folder, images to copy but no store (a
    PostgreSQL catalog without ``MODELVAULT_IMAGES_DIR``), or a store that is the
    legacy folder or inside it: one sentence, as ``ConfigError``/``ValidationError``.
    """
    if images_dir is not None:
        folder = Path(images_dir).expanduser().absolute()
        if not folder.is_dir():
            raise ValidationError(
                f"the images folder {folder} does not exist or is not a folder: give the "
                "folder of the legacy preview images (images/ beside hikaze_mm.sqlite3)."
            )
    else:
        folder = Path(legacy_path).expanduser().absolute().parent / LEGACY_IMAGES_FOLDER
        if not folder.is_dir():
            return folder  # no images to read: every URL will count as missing
    if store is None:
        if _file_names(folder):
            raise ConfigError(
                f"the legacy preview images in {folder} need an image store, and the catalog "
                f"at {catalog} has none: set MODELVAULT_IMAGES_DIR to a folder for them."
            )
        return folder
    if store.exists() and not store.is_dir():
        raise ConfigError(f"the image store {store} is not a folder: set MODELVAULT_IMAGES_DIR.")
    real_store = Path(os.path.realpath(store))
    real_folder = Path(os.path.realpath(folder))
    if real_store == real_folder or real_folder in real_store.parents:
        raise ConfigError(
            f"the image store {store} would be inside the legacy images folder {folder}, which "
            "is only ever read: set MODELVAULT_IMAGES_DIR to another folder."
        )
    return folder


def _file_names(folder: Path) -> list[str]:
    """The names in a folder that are not folders (none if it cannot be listed)."""
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if not e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    file: str  # the name in the store
    copied: bool  # False: the store held it already


class ImageStore:
    """The content-addressed folder of preview images (created on first write)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser().absolute()

    def path_of(self, preview: Mapping[str, Any] | str) -> Path:
        """The absolute path of a preview: a ``meta.previews`` entry or its ``file``."""
        return self.folder / preview_file(preview)

    def add(self, source: Path) -> StoredImage:
        """Copy a regular file into the store unless it holds those bytes already.

        Problems of the source raise ``_SourceProblem`` (the caller warns and goes
        on); problems of the store raise ``ImageStoreError``, with no temporary
        file left behind.
        """
        digest = _hash_source(source)
        name = stored_name(digest, source.name)
        target = self.folder / name
        if _hash_stored(target) == digest:
            return StoredImage(digest, name, copied=False)
        self._write(source, target, digest)
        return StoredImage(digest, name, copied=True)

    def _write(self, source: Path, target: Path, digest: str) -> None:
        with self._writing(f"writing {target.name}"):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".incoming-", suffix=".part")
        try:
            with self._writing(f"writing {target.name}"), os.fdopen(fd, "wb") as out:
                copied = hashlib.sha256()
                for chunk in _read_source(source):
                    copied.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if copied.hexdigest() != digest:
                raise _SourceProblem("it changed while it was being copied")
            if _hash_stored(Path(temp)) != digest:
                raise ImageStoreError(
                    f"the image store {self.folder} gave back other bytes than were written "
                    f"for {target.name}: check the disk."
                )
            with self._writing(f"writing {target.name}"):
                os.chmod(temp, 0o644)
                os.replace(temp, target)
                _fsync_folder(self.folder)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp)
            raise

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            hint = (
                "free some space"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else ("check that it is a folder you can write")
            )
            raise ImageStoreError(
                f"the image store {self.folder} failed while {what} "
                f"({exc.strerror or exc}): {hint}, or set MODELVAULT_IMAGES_DIR to another folder."
            ) from exc


def _open_source(path: Path) -> io.FileIO:
    """The image opened read-only, never blocking, only if it is a regular file (not a link)."""
    try:
        return open_regular_file(path, follow_symlinks=False)
    except NotRegularFileError as exc:
        raise _SourceProblem("it is not a regular file") from exc
    except FileChangedError as exc:
        raise _SourceProblem("it was replaced while it was being opened") from exc
    except OSError as exc:
        raise _SourceProblem(f"it cannot be read ({exc.strerror or exc})") from exc


def _read_source(path: Path) -> Iterator[bytes]:
    with _open_source(path) as source:
        while True:
            try:
                chunk = source.read(CHUNK)
            except OSError as exc:
                raise _SourceProblem(f"it cannot be read ({exc.strerror or exc})") from exc
            if not chunk:
                return
            yield chunk


def _hash_source(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _read_source(path):
        digest.update(chunk)
    return digest.hexdigest()


def _hash_stored(path: Path) -> str | None:
    """The SHA-256 of a file in the store, or None if there is no readable file."""
    try:
        return _hash_source(path)
    except _SourceProblem:
        return None


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX; Windows cannot open a folder, nor needs to)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ImageReport:
    """What happened to the legacy preview images (part of ``ImportReport``)."""

    folder: str  # the legacy images folder that was read
    store: str | None  # the catalog's image store
    copied: int = 0  # files written to the store (named by a URL, or earlier previews)
    present: int = 0  # files the store held already (a re-run copies nothing)
    missing: int = 0  # named by a URL but not in the folder
    missing_files: list[dict[str, Any]] = field(default_factory=list)  # {"legacy_id", "file"}
    failed: int = 0  # named by a URL but refused or unreadable (see the warnings)
    earlier: int = 0  # no URL names them, but their name gives their row: kept with it
    unreferenced: int = 0  # no row names or claims them: left where they are
    unreferenced_files: list[str] = field(default_factory=list)  # the first MAX_LISTED


Warn = Callable[[Any, str], None]


class LegacyImages:
    """Copies the images the rows of one import name into the store.

    The legacy app names a preview ``model_<legacy id>_<ms>_<name>`` and leaves
    the previous one behind when a new one is uploaded. Those earlier previews
    are the user's work too: a file no URL names whose name gives the legacy id
    of a row is copied as well and listed in that row's
    ``meta.legacy.earlier_previews`` (same form as ``meta.previews``, ``source``
    being the URL it had). Files no row claims are counted, listed in the
    report, and left where they are.
    """

    def __init__(self, folder: Path, store: ImageStore | None, warn: Warn) -> None:
        self.folder = folder
        self.real_folder = os.path.realpath(folder)
        self.store = store
        self.warn = warn
        self.report = ImageReport(str(folder), None if store is None else str(store.folder))
        self.folder_exists = folder.is_dir()
        self.named: set[str] = set()  # files of the folder a row's URL names
        self.claimed: set[str] = set()  # kept as an earlier preview of its row
        self.by_row: dict[int, list[str]] = {}  # legacy id -> files named after it
        for name in sorted(_file_names(self.folder), key=_upload_order):
            if (match := _UPLOADED.fullmatch(name)) is not None:
                self.by_row.setdefault(int(match[1]), []).append(name)

    @classmethod
    def checked(
        cls,
        legacy_path: str | os.PathLike[str],
        images_dir: str | os.PathLike[str] | None,
        store: Path | None,
        catalog: str,
        warn: Warn,
    ) -> LegacyImages:
        """For an import into ``catalog`` (its URL) with image store ``store``,
        after ``check_image_folders``: call it before anything is written."""
        folder = check_image_folders(legacy_path, images_dir, store, catalog)
        return cls(folder, None if store is None else ImageStore(store), warn)

    def add_previews(self, legacy_id: Any, meta: dict[str, Any]) -> None:
        """Copy the images ``meta["images"]`` names and list them in
        ``meta["previews"]``; then the row's earlier previews, if any."""
        urls = meta.get("images")
        previews = []
        for url in [urls] if isinstance(urls, str) else urls if isinstance(urls, list) else []:
            preview = self._preview(legacy_id, url)
            if preview is not None and preview not in previews:
                previews.append(preview)
        if previews:
            meta[PREVIEWS] = previews
        earlier = self._earlier(legacy_id)
        if earlier and isinstance(meta.get(LEGACY), dict):
            meta[LEGACY]["earlier_previews"] = earlier

    def _preview(self, legacy_id: Any, url: Any) -> dict[str, str] | None:
        try:
            name = media_file(url)
        except ValidationError as exc:
            self._failed(legacy_id, f"preview image {exc}; it is not copied")
            return None
        if name is None:
            return None
        if not self.folder_exists or not os.path.lexists(self.folder / name):
            # Listed in the report, not warned: a folder that was never copied
            # along would otherwise push every other warning out.
            self.report.missing += 1
            if len(self.report.missing_files) < MAX_LISTED:
                self.report.missing_files.append({"legacy_id": legacy_id, "file": name})
            return None
        self.named.add(name)  # only names of files there: memory stays bounded by the folder
        try:
            return self._copy(name, url)
        except _SourceProblem as exc:
            self._failed(legacy_id, f"preview image {self.folder / name} is not copied: {exc}")
            return None

    def _earlier(self, legacy_id: Any) -> list[dict[str, str]]:
        names = self.by_row.pop(legacy_id, None) if isinstance(legacy_id, int) else None
        if not names:
            return []  # nearly every row
        earlier = []
        for name in names:
            if name in self.named:
                continue
            try:
                earlier.append(self._copy(name, MEDIA_PREFIX + name))
            except _SourceProblem as exc:
                self.warn(legacy_id, f"earlier preview {self.folder / name} is not copied: {exc}")
                continue
            self.claimed.add(name)
            self.report.earlier += 1
        return earlier

    def _copy(self, name: str, source: str) -> dict[str, str]:
        """Store a file of the folder; its ``meta.previews`` entry."""
        real = os.path.realpath(self.folder / name)
        if os.path.dirname(real) != self.real_folder:
            raise _SourceProblem("it links out of the images folder")
        if self.store is None:  # only when the folder had no files when the import began
            raise _SourceProblem("the catalog has no image store")
        stored = self.store.add(Path(real))
        if stored.copied:
            self.report.copied += 1
        else:
            self.report.present += 1
        return {"sha256": stored.sha256, "file": stored.file, "source": source}

    def _failed(self, legacy_id: Any, reason: str) -> None:
        self.report.failed += 1
        self.warn(legacy_id, reason)

    def finish(self) -> ImageReport:
        """Count the files of the folder that no row named or claimed."""
        left = sorted(set(_file_names(self.folder)) - self.named - self.claimed)
        self.report.unreferenced = len(left)
        self.report.unreferenced_files = left[:MAX_LISTED]
        return self.report


_UPLOADED = re.compile(r"model_(\d+)_(\d+)_.+", re.DOTALL)


def _upload_order(name: str) -> tuple[int, str]:
    """Oldest upload first (the legacy name carries its time in milliseconds)."""
    match = _UPLOADED.fullmatch(name)
    return (int(match[2]) if match else 0, name)


def preview_file(preview: Mapping[str, Any] | str) -> str:
    """The store name of a preview given as a ``meta.previews`` entry or a name."""
    file = preview.get("file") if isinstance(preview, Mapping) else preview
    if not is_stored_name(file):
        raise ValidationError(
            f"{file!r} is not the name of a stored preview: give an entry of meta.previews."
        )
    assert isinstance(file, str)
    return file


__all__ = [
    "ImageReport",
    "ImageStore",
    "LegacyImages",
    "check_image_folders",
    "default_store",
    "media_file",
    "preview_file",
    "stored_name",
]
