"""A legacy row in v3 form: ``RowConverter.convert`` turns a ``LegacyRow`` into
an ``ImportRow``, the values the catalog stores, with everything else kept in
its ``meta.legacy`` (the rules: docs/ARCHITECTURE.md, "Stage 1").

Conversion never touches the catalog (the importer runs it in a helper thread,
see ``modelvault.migration.read_ahead``); it reads the legacy file only to tell
whether a cleaned path is another row's, and ``stat`` s a file only to tell
whether its legacy hash still describes it (``values.file_changed``). What is
worth a warning goes to ``notes`` (legacy id, reason).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelvault.catalog.settle import HashedFile
from modelvault.catalog.tags import TagSpec
from modelvault.catalog.values import LEGACY, PREVIEWS, RESERVED_META_KEYS
from modelvault.db.types import utcnow
from modelvault.legacy import values
from modelvault.legacy.images import LegacyImages
from modelvault.legacy.layout import LegacyLayout, LegacyRow, NotUtf8Text
from modelvault.legacy.reader import LegacyCatalog
from modelvault.normalize import RELATIVE_PATH, is_absolute_path, parse_sha256
from modelvault.pathkey import device_problem, reserved_device, stored_key

Notes = Callable[[Any, str], None]  # (legacy id, reason): a warning about a row

_RESERVED_KEYS = frozenset(RESERVED_META_KEYS)
_JSON_SPACE = " \t\n\r"


@dataclass(slots=True)
class ImportRow:
    """A legacy row ready for the catalog (its tags are set once its batch's are known)."""

    legacy_id: int
    path: str
    key: str  # the path's identity key (modelvault.pathkey)
    stored_key: str | None  # its path_key: None where the path is its own key
    name: str
    type: str
    size_bytes: int | None
    mtime_ns: int | None
    created_at: datetime
    # Its meta; or, when ``extra_head`` is set, only modelvault's keys of it (see there).
    meta: dict[str, Any]
    sha256: str | None  # None: the legacy hash does not count
    tags: list[TagSpec] = field(default_factory=list)
    path_clash: str | None = None  # why it is staged as a conflict at a path of its own
    unusable_path: str | None = None  # why it is staged as failed (a relative path)
    # The legacy extra_json text of the user's own keys, up to its closing brace,
    # when the meta is that object with modelvault's keys after it: the text is
    # kept as written (it was just read as JSON, and nothing changes it), so the
    # meta's JSON costs the encoding of modelvault's keys only, and a batch does
    # not hold every row's notes as Python objects as well (memory).
    extra_head: str | None = None

    def meta_json(self) -> str:
        """The row's meta as JSON text (whose value is ``full_meta()``)."""
        ours = values.json_text(self.meta)
        return ours if self.extra_head is None else self.extra_head + ours[1:]  # less its "{"

    def full_meta(self) -> dict[str, Any]:
        """The row's meta: the user's keys, then modelvault's."""
        if self.extra_head is None:
            return self.meta
        full: dict[str, Any] = json.loads(self.meta_json())
        return full

    def hashed(self) -> HashedFile:
        """The row as a hashed file, for ``catalog.settle.settle_file``."""
        assert self.sha256 is not None
        return HashedFile(
            sha256=self.sha256,
            path=self.path,
            name=self.name,
            type=self.type,
            size_bytes=self.size_bytes,
            mtime_ns=self.mtime_ns,
            created_at=self.created_at,
            meta=self.full_meta(),
            tags=self.tags,
        )


class RowConverter:
    """Turns the legacy rows of one import into ``ImportRow``s, one at a time.

    It remembers the paths it cleaned (NUL replaced, a blob or number read as
    text): only these can collide with another row's path.
    """

    def __init__(self, legacy: LegacyCatalog, images: LegacyImages, notes: Notes) -> None:
        self.legacy = legacy
        self.source = str(legacy.path)
        self.layout1 = legacy.layout is LegacyLayout.V1
        self.images = images
        self.notes = notes
        self.cleaned_paths: dict[str, int] = {}  # a cleaned path -> the legacy id that holds it

    def convert(self, row: LegacyRow) -> ImportRow:
        """The row in v3 form. Runs for every row: the common values (an int, a
        size that is a count, an empty hash) take a quick test before any call.
        The calls come in the order ``meta.legacy`` gets its keys."""
        created_ms = row.created_at
        legacy: dict[str, Any] = {
            "source": self.source,
            "id": row.id,
            "created_at_ms": created_ms if type(created_ms) is int else values.jsonable(created_ms),
        }
        self._keep_bytes(row, legacy)
        path, path_clash = self._path(row, legacy)
        size = row.size_bytes
        if type(size) is not int or size < 0:
            size = values.legacy_count(size, "size_bytes", legacy)
        mtime_ns = values.layout1_fields(row, legacy) if self.layout1 else None
        created_at = self._created_at(row.id, created_ms)
        meta, extra_head = self._meta(row, legacy)
        raw_hash = row.hash_hex
        if raw_hash is None or (type(raw_hash) is str and not raw_hash):
            sha256, seen_mtime_ns = None, None  # the legacy app never hashed it
        else:
            sha256, seen_mtime_ns = self._usable_hash(row, path, size, legacy)
        key = stored_key(path)  # a Windows path is keyed by Windows' rules, wherever this runs
        return ImportRow(
            legacy_id=row.id,
            path=path,
            key=path if key is None else key,
            stored_key=key,
            name=values.name_of(row.name, path, legacy),
            type=values.model_type_of(row.type, path, legacy),
            size_bytes=size,
            mtime_ns=mtime_ns if seen_mtime_ns is None else seen_mtime_ns,
            created_at=created_at,
            meta=meta,
            sha256=sha256,
            path_clash=path_clash,
            unusable_path=unusable(path),
            extra_head=extra_head,
        )

    def _created_at(self, legacy_id: int, created_ms: Any) -> datetime:
        created_at = values.from_ms(created_ms)
        if created_at is None:
            self.notes(
                legacy_id, f"created_at {created_ms!r} is not a time in milliseconds; now is used"
            )
            return utcnow()
        return created_at

    def _keep_bytes(self, row: LegacyRow, legacy: dict[str, Any]) -> None:
        """Keep the exact bytes of every value stored as a BLOB or as TEXT that is
        not UTF-8 in ``meta.legacy.<column>_bytes_b64``: the columns get the text
        decoded with replacement characters, which loses the bytes."""
        kinds = set(map(type, row))  # one pass in C: nearly every row has no bytes
        if bytes not in kinds and NotUtf8Text not in kinds:
            return
        for column, value in zip(row._fields, row, strict=True):
            if isinstance(value, bytes):
                legacy[f"{column}_bytes_b64"] = base64.b64encode(value).decode("ascii")
                what = "text that is not UTF-8" if isinstance(value, NotUtf8Text) else "a BLOB"
                self.notes(
                    row.id,
                    f"its {column} is {what}; it is read with replacement characters, and "
                    f"its exact bytes are kept in meta.legacy.{column}_bytes_b64",
                )

    def _path(self, row: LegacyRow, legacy: dict[str, Any]) -> tuple[str, str | None]:
        """The row's path, and why it is a conflict at a path of its own (or None)."""
        raw_path = row.path
        if isinstance(raw_path, str) and "\x00" not in raw_path:
            return raw_path, None  # nearly every row
        legacy["path"] = values.jsonable(raw_path)
        return self._cleaned_path(row.id, raw_path)

    def _cleaned_path(self, legacy_id: int, raw: Any) -> tuple[str, str | None]:
        """The path of a row whose stored path is not storable text, and why it is
        a conflict if that path is another row's (None when it is its own).

        A path stored as text without NUL is unique in the legacy file and always
        keeps its place. A cleaned one (NUL -> U+FFFD, a blob or number read as
        text) may equal another row's path: it is then staged as a conflict at a
        path of its own, ``"<path> (legacy id N)"``, the same on every run.
        """
        path = values.storable(values.text(raw) or "")
        what = "holds a NUL character" if isinstance(raw, str) else "is not stored as text"
        holder = self.cleaned_paths.get(path)
        if holder is None:
            holder = next(iter(self.legacy.ids_with_path(path)), None)
        if holder is None:
            self.cleaned_paths[path] = legacy_id
            self.notes(legacy_id, f"its path {what}; it is read as {path!r}")
            return path, None
        candidate, n = f"{path} (legacy id {legacy_id})", 1
        while candidate in self.cleaned_paths or self.legacy.ids_with_path(candidate):
            n += 1
            candidate = f"{path} (legacy id {legacy_id}, {n})"
        self.cleaned_paths[candidate] = legacy_id
        reason = (
            f"its path {what} and reads as {path!r}, the path of legacy row {holder}; "
            f"staged as a conflict at {candidate!r} (the stored path is in meta.legacy.path)"
        )
        return candidate, reason

    def _usable_hash(
        self, row: LegacyRow, path: str, size: int | None, legacy: dict[str, Any]
    ) -> tuple[str | None, int | None]:
        """The legacy SHA-256 if it can be trusted, and the file's mtime when it
        was seen unchanged (see ``values.file_changed``)."""
        raw = values.text(row.hash_hex)
        if not raw:
            return None, None  # '' (or NULL): the legacy app never hashed it
        sha = parse_sha256(raw)
        why, seen_mtime_ns = None, None
        if sha is None:
            why = f"hash_hex {raw!r} is not a SHA-256 (64 hex digits)"
        elif self.layout1 and str(row.hash_algo).strip().lower() != "sha256":
            why = f"its hash algorithm is {row.hash_algo!r}, not sha256"
        else:
            why, seen_mtime_ns = values.file_changed(row, path, size, self.legacy.layout)
        usable = sha if why is None else None
        if raw != usable:
            legacy["hash_hex"] = raw
        if why is not None:
            legacy["hash_ignored"] = why
            self.notes(row.id, why + "; staged to be hashed")
        return usable, seen_mtime_ns

    def _meta(self, row: LegacyRow, legacy: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The row's meta with its previews copied; and its extra_json text up to
        the closing brace when the meta is that very object and modelvault's keys
        (see ``ImportRow.extra_head``)."""
        meta, extra_head = self._user_meta(row, legacy)
        users_keys = len(meta) - 1
        self.images.add_previews(row.id, meta)
        if extra_head is None:
            return meta, None
        previews = meta.get(PREVIEWS)
        ours = {LEGACY: legacy} if previews is None else {LEGACY: legacy, PREVIEWS: previews}
        if len(meta) == users_keys + len(ours):
            return ours, extra_head
        return meta, None  # keys modelvault does not know of came: the whole object

    def _user_meta(
        self, row: LegacyRow, legacy: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The row's meta, and its extra_json text up to the closing brace when the
        meta is that very object (see ``ImportRow.meta_json``)."""
        if row.meta_json is not None:
            self._legacy_meta_json(row, legacy)
        meta: dict[str, Any] | None = None
        head = None
        extra = row.extra_json
        if type(extra) is not str:
            extra = values.text(extra)
        if extra is not None:
            value, problem = values.parse_json(extra)
            ok = problem in (None, values.REPEATED_KEYS)
            if problem is not None:
                legacy["extra_json_raw"] = extra
                self.notes(row.id, f"extra_json {problem}; its text is kept")
            if isinstance(value, dict):
                if not _RESERVED_KEYS.isdisjoint(value):  # in C: nearly every row has none
                    legacy["extra_json_shadowed"] = {
                        key: value.pop(key) for key in RESERVED_META_KEYS if key in value
                    }
                elif problem is None and type(row.extra_json) is str:
                    head = _object_head(extra)
                meta = value
            elif ok and value is not None:
                legacy["extra_json"] = value
        if meta is None:
            meta = {}
        meta[LEGACY] = legacy
        return meta, head

    def _legacy_meta_json(self, row: LegacyRow, legacy: dict[str, Any]) -> None:
        """The legacy ``meta_json`` in ``meta.legacy``: parsed, else its text."""
        meta_json = values.text(row.meta_json)
        assert meta_json is not None
        value, problem = values.parse_json(meta_json)
        ok = problem in (None, values.REPEATED_KEYS)
        legacy["meta_json" if ok else "meta_json_raw"] = value if ok else meta_json
        if not ok:
            self.notes(row.id, f"meta_json {problem}; its text is kept")


def unusable(path: str) -> str | None:
    """Why a legacy path can never be hashed (a relative path, a Windows device
    name), or None."""
    if not path.startswith("/") and not is_absolute_path(path):  # "/" first: the common case
        return RELATIVE_PATH
    device = reserved_device(path)
    if device is not None:
        return f"its path {device_problem(device)} (rename the file, then scan it)"
    return None


def _object_head(text: str) -> str:
    """The text of a JSON object up to its closing brace, ready for more keys."""
    body = text.strip(_JSON_SPACE)[:-1].rstrip(_JSON_SPACE)
    return body if body.endswith("{") else body + ", "


__all__ = ["ImportRow", "Notes", "RowConverter", "unusable"]
