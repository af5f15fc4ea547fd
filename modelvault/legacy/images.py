"""The legacy app's preview images, copied into the catalog's image store.

The legacy app kept previews in the folder ``images/`` beside its database and
named them in ``extra_json.images`` by URLs ``/media/<file>``. ``LegacyImages``
copies each image a row names into the store (``modelvault.images.ImageStore``).
The legacy folder is only ever read: a file is checked with ``stat`` before it
is opened, opened read-only and non-blocking (a FIFO cannot hang the import),
and never changed or moved. Only a plain file name directly in that folder is
taken from a URL: ``..``, folders, absolute paths and links leading out of the
folder are refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelvault.catalog.values import LEGACY, PREVIEWS
from modelvault.errors import ConfigError, ValidationError
from modelvault.images import ImageStore, SourceProblem

MEDIA_PREFIX = "/media/"  # how the legacy app's URLs name a file of its images folder
LEGACY_IMAGES_FOLDER = "images"  # beside the legacy database
MAX_LISTED = 100  # missing and unreferenced files listed in the report (all are counted)
_NOT_PLAIN = re.compile(r"[/\\:\x00]")  # a folder, a drive, or NUL: not a plain file name


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
        except SourceProblem as exc:
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
            except SourceProblem as exc:
                self.warn(legacy_id, f"earlier preview {self.folder / name} is not copied: {exc}")
                continue
            self.claimed.add(name)
            self.report.earlier += 1
        return earlier

    def _copy(self, name: str, source: str) -> dict[str, str]:
        """Store a file of the folder; its ``meta.previews`` entry."""
        real = os.path.realpath(self.folder / name)
        if os.path.dirname(real) != self.real_folder:
            raise SourceProblem("it links out of the images folder")
        if self.store is None:  # only when the folder had no files when the import began
            raise SourceProblem("the catalog has no image store")
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
