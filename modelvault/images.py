"""Preview images: the catalog's content-addressed store.

The store is a folder owned by the catalog (``DatabaseManager.images_dir``):
each image is kept once, as ``<sha256>.<ext>`` (the SHA-256 of its bytes, the
lower-case extension of the name it came with), written atomically (a temporary
file in the store folder, fsync, rename, fsync of the folder) and read back to
check it. Images never go into the database; a model's ``meta.previews`` lists
its images as ``{"sha256", "file", "source"}``. The legacy app's previews are
copied in by ``modelvault.legacy.images``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from modelvault.db.engine import sqlite_file
from modelvault.errors import (
    FileChangedError,
    ImageStoreError,
    NotRegularFileError,
    ValidationError,
)
from modelvault.hashing import open_regular_file

STORE_FOLDER = "images"  # the default store: beside a SQLite catalog file
CHUNK = 1 << 20
_EXTENSION = re.compile(r"[a-z0-9]{1,10}")
_STORED_NAME = re.compile(r"[0-9a-f]{64}(\.[a-z0-9]{1,10})?")


class SourceProblem(Exception):
    """An image that cannot be taken into the store (the reason is the message):
    the caller warns and goes on."""


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

        Problems of the source raise ``SourceProblem`` (the caller warns and goes
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
                raise SourceProblem("it changed while it was being copied")
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
        raise SourceProblem("it is not a regular file") from exc
    except FileChangedError as exc:
        raise SourceProblem("it was replaced while it was being opened") from exc
    except OSError as exc:
        raise SourceProblem(f"it cannot be read ({exc.strerror or exc})") from exc


def _read_source(path: Path) -> Iterator[bytes]:
    with _open_source(path) as source:
        while True:
            try:
                chunk = source.read(CHUNK)
            except OSError as exc:
                raise SourceProblem(f"it cannot be read ({exc.strerror or exc})") from exc
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
    except SourceProblem:
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
    "ImageStore",
    "SourceProblem",
    "default_store",
    "preview_file",
    "stored_name",
]
