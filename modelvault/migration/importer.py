"""Stage 1 of the migration: legacy catalog -> ``models`` and ``pending_import``.

``import_legacy_data(legacy_path, db)`` reads the legacy file through a
read-only engine (``modelvault.migration.legacy``) in batches of
``settings.import_batch_size`` rows, each written in one catalog transaction.
Into a catalog that holds no models yet, the rows come in the order of their
legacy hash, those without one first: each batch then adds to one stretch of
the catalog's SHA-256 indexes. There, rows of different contents never meet
(legacy paths are unique; rows of one content come in id order), so every row
goes where it would go in id order. A catalog that holds models is read in id
order: there a row can meet a model that another row, of another content, moves
away from its path, and the outcome would depend on which row came first.

The work is split in modules, read in this order: ``cleaning`` (a legacy value
in v3 form, and whether a legacy hash still describes its file),
``legacy_tags`` (the legacy tags in v3 form, registered in the catalog),
``placement`` (where a row goes: one pure function of the row and of what the
catalog holds for its path and hash), ``bulk`` (what the catalog holds for a
batch, and the batch's rows written in a few statements per backend),
``report`` (``ImportReport``), and this one, which runs them batch by batch.

Where each legacy row goes
--------------------------
A legacy hash counts when it is 64 hex digits after trimming (any case; stored
lower-case), its algorithm is sha256 (layout 1), and the file provably did not
change since the legacy app saw it (one ``stat``): the file is gone (or its path
is not one of this machine, such as a Windows path here), or it has the legacy
``size_bytes`` and was last written (layout 2) at or before the row's
``created_at``, in whole milliseconds, or (layout 1) exactly at ``mtime_ns``.
The legacy app's re-scan stores a file's new size but keeps its old hash, so
the size alone proves nothing. Any other usable hash is kept in
``meta.legacy.hash_hex`` with the reason in ``meta.legacy.hash_ignored``, and
the row is staged to be hashed. Then, in this order:

- its path is staged already (any status)               -> ``already_present``
- its path is relative (not absolute on any OS): it is never looked up from the
  current folder; or it names a device Windows keeps (``C:\\m\\nul.safetensors``:
  never opened)                                          -> staging row ``failed``,
  the reason in ``last_error`` (``failed``)
- its stored path is not text without NUL (NUL -> U+FFFD, a blob or number read
  as text) and, so cleaned, is the path of another legacy row: staging row
  ``conflict`` at ``"<path> (legacy id N)"``, the stored path in
  ``meta.legacy.path`` and why in ``last_error`` (``conflicts``). A path stored
  as plain text always keeps its place; the same row gets the same path on
  every run, so a re-run finds it staged.
- its path is a model that a legacy import put there (``meta.legacy``, or a
  ``meta.superseded[*].meta.legacy``, names a source: directly, by a merge or
  move, or by the worker; at another spelling of the path, only if it names
  this row)                                              -> ``already_present``
- its path (in any spelling: a model is found by the path's identity key,
  ``modelvault.pathkey``, so a Windows path is compared as Windows compares it
  wherever the import runs) is a model the user catalogued by other means:
  same hash -> fields combined by the conflict policy, tags united (``merged``);
  another hash -> staging row ``conflict`` (``conflicts``);
  hash does not count -> staged for the worker to settle (``staged``)
- the hash does not count                                -> staging row ``pending`` (``staged``)
- the hash is new to the catalog                         -> a model with its tags (``imported``)
- the content is catalogued at another path:
  if that model moved away from this row's path and holds this row (source and
  legacy id, see above)                                  -> ``already_present``;
  if that model's file is gone and this row's file exists, the model moves here
  (``catalog.settle_file`` with ``path_is_live``): its old path goes to
  ``meta.previous_paths``, fields and notes are combined by the policy, the
  notes that give way are kept in ``meta.superseded`` with their path, tags
  united (``moved``);
  otherwise staging row ``duplicate`` with ``sha256`` set, keeping the row's own
  notes, and its tags merged into the model (``duplicates``).

A row's ``type`` is ComfyUI's model type for the legacy value, which the
legacy app took from the folder name (``normalize.model_type_for_folder``:
``loras`` -> ``lora``, ``checkpoints`` -> ``checkpoint``, ``upscale_models`` ->
``upscale``, a folder ComfyUI does not know is kept as its own type). A file
directly in a models root got its own file name as type: that says nothing of
what it is, so it is ``other``. The stored value goes to ``meta.legacy.type``
whenever it differs. Tags are migrated as the user had them (a tag ``loras``
stays ``loras``).

The policy is ``import_legacy_data(..., policy=)`` or ``settings.conflict_policy``.
Rows that collide go through ``catalog.settle_file``, the one definition shared
with the worker; the non-colliding bulk is inserted in a few statements
(``bulk``: multi-row ``INSERT`` on SQLite, ``COPY`` on PostgreSQL), which give
the same rows. A re-run therefore changes nothing, and a run that stopped
half-way (each batch is atomic) is completed by running it again. A batch that
breaks a unique key is written again only if the catalog changed meanwhile
(another writer got in first); otherwise ``MigrationError`` says which rows.

The report
----------
``rows_read == imported + merged + moved + staged + duplicates + conflicts +
already_present + failed`` always. ``warnings`` holds up to ``MAX_WARNINGS`` entries
``{"table", "legacy_id", "reason"}`` (the rest are counted in
``warnings_omitted``, so memory stays flat); ``unreadable_colors`` lists every
legacy tag colour that is not a colour, and ``color_clashes`` every readable one
the v3 tag does not have (``{"tag_id", "tag", "color", "tag_color"}``): the tag
existed in the catalog with another colour, or two legacy tags have one name
once normalised (``"Red"`` and ``"red "``), and the first colour in legacy id
order wins.

The ``meta`` of a model or staging row
--------------------------------------
Every key of the legacy ``extra_json`` object (``description``,
``community_links``, ``images``, ``prompts``, ...) at the top level, where apps
look for them (their JSON text as the legacy app wrote it, when the object is
kept whole), and under ``"legacy"`` what has no v3 column::

    "legacy": {
      "source": "/abs/path/hikaze_mm.sqlite3",   # always
      "id": 12,                                   # always: legacy models.id
      "created_at_ms": 1724000000000,             # always, as stored
      # only when there is something to keep:
      "hash_hex": " 9F86...",        # a non-empty legacy hash not stored as-is in sha256
      "hash_ignored": "why",         # why a hash-like value was not used
      "hash_algo", "dir_path", "mtime_ns", "updated_at_ms",   # layout 1 columns
      "meta_json": {...},            # legacy meta_json, parsed
      "meta_json_raw": "...",        # ...or its text when it is not JSON (or nested
                                     # deeper than MAX_JSON_DEPTH levels, or holds a
                                     # number beyond a float's range, like 1e400)
      "extra_json": [...],           # extra_json that is JSON but not an object
      "extra_json_raw": "...",       # extra_json text that is not JSON, repeats keys,
                                     # is nested deeper than MAX_JSON_DEPTH levels, or
                                     # holds a number beyond a float's range
      "<column>_bytes_b64": "...",   # the exact bytes, base64 (RFC 4648, padded), of
                                     # a value stored as a BLOB or as TEXT that is not
                                     # UTF-8 (e.g. "extra_json_bytes_b64"); the column
                                     # and the keys above get it decoded as UTF-8 with
                                     # U+FFFD for each invalid byte
      "extra_json_shadowed": {...},  # extra_json keys named like modelvault's own
                                     # top-level keys ("legacy", "previous_paths",
                                     # "superseded", "previews")
      "path", "name", "type",        # the stored value whenever it differs from the
      "size_bytes",                  # column's (NUL in a path, a blank or too long
                                     # name, a type that is a folder name or a file
                                     # name, not in lower case or too long, a value
                                     # not stored as text, a size not a count)
      "tag_colors": {"Tag": "raw"},  # colours of this row's tags that the v3 tag does
                                     # not have (unreadable, clashing, or read with
                                     # alpha dropped or rounded: rgba(), hsl(),
                                     # #rrggbbaa), by legacy tag name as stored
      "unusable_tags": [{"id", "name", "color"}],  # tags whose name cannot be a v3 tag
      "earlier_previews": [...],     # previews the legacy app replaced but left in its
                                     # images folder, stored like meta.previews
      "tag_bytes_b64": {"<legacy tag id>": {"name": "...", "color": "..."}},
                                     # exact bytes (base64) of this row's tags' names
                                     # and colours stored as BLOBs or non-UTF-8 text
    }

``previews`` lists the images ``images`` names (``/media/<file>``), copied into
the catalog's image store: ``{"sha256", "file", "source"}`` (``file`` is the name
in the store, ``source`` the legacy URL); ``images`` stays as it was. The
report's ``images`` counts them (``modelvault.images.ImageReport``).

No single cell stops the import: a value that is not UTF-8 text or is a BLOB
is read as bytes and kept as above, with a warning naming the row; JSON that
cannot be stored is kept as text, like invalid JSON.

Memory stays flat however many tags there are: legacy tags are registered
``TAG_CHUNK`` at a time, and at most ``TAG_CACHE`` of them are kept between
batches (a batch looks up again the ones its links need); a batch carries at
most ``legacy.LINKS_PER_BATCH`` links (bench/import_bench.py --links-stress).

An unreadable or clashing colour is kept in the report and in
``meta.legacy.tag_colors`` of every row that carries the legacy tag; an
unreadable one gives the v3 tag no colour (the user can give it one). Tags are
created for every legacy tag, used or not, with the legacy ``created_at``.
"""

from __future__ import annotations

import base64
import functools
import gc
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelvault.catalog.settle import HashedFile, Outcome, settle_file
from modelvault.catalog.tags import TagSpec
from modelvault.catalog.values import LEGACY, PREVIEWS, RESERVED_META_KEYS
from modelvault.config import check_conflict_policy
from modelvault.database import DatabaseManager
from modelvault.db.engine import SQLITE_BEGIN
from modelvault.db.models import Model, PendingStatus, model_tags
from modelvault.db.types import utcnow
from modelvault.errors import CatalogError, MigrationError
from modelvault.legacy import rows as cleaning
from modelvault.legacy.images import LegacyImages
from modelvault.legacy.layout import LegacyBatch, LegacyLayout, LegacyRow, NotUtf8Text
from modelvault.legacy.placement import Place, place
from modelvault.legacy.reader import LegacyCatalog, open_legacy
from modelvault.legacy.tags import LegacyTags
from modelvault.migration.bulk import (
    MODELS,
    PENDING,
    BulkInsert,
    CatalogState,
    Lookups,
    bulk_insert,
)
from modelvault.migration.report import MAX_WARNINGS, OUTCOMES, ImportReport
from modelvault.normalize import (
    RELATIVE_PATH,
    is_absolute_path,
    parse_sha256,
)
from modelvault.pathkey import device_problem, reserved_device, stored_key

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

TAG_CHUNK = 10_000  # legacy tags registered per transaction
TAG_CACHE = 50_000  # legacy tags kept in memory between batches
# A concurrent writer (a worker on PostgreSQL) may insert the same model between
# our look-up and our insert; the batch is then read and written again, but only
# if the catalog changed meanwhile: otherwise the same write would fail again.
BATCH_ATTEMPTS = 3
SQLITE_CACHE_KIB = 16 * 1024  # the import connection's page cache (random-key indexes)
_RESERVED_KEYS = frozenset(RESERVED_META_KEYS)

MODEL_COLUMNS: tuple[str, ...] = (
    *("sha256", "path", "name", "type", "base", "size_bytes", "mtime_ns"),
    *("created_at", "updated_at", "meta", "path_key"),
)
PENDING_COLUMNS: tuple[str, ...] = (
    *("path", "name", "type", "size_bytes", "created_at", "meta", "tags"),
    *("legacy_id", "source", "status", "attempts", "last_error", "sha256", "path_key"),
)


def import_legacy_data(
    legacy_db_path: str | os.PathLike[str] | LegacyCatalog,
    db: DatabaseManager | None = None,
    *,
    progress: Progress | None = None,
    policy: str | None = None,
    images_dir: str | os.PathLike[str] | None = None,
) -> ImportReport:
    """Import a legacy catalog into ``db`` (default: the configured catalog).

    ``policy`` (``merge``, ``keep`` or ``replace``; None: the catalog's
    ``settings.conflict_policy``) decides how a legacy row combines with a model
    that holds the same content (see ``catalog.combine_fields``); a value not
    among those raises ``ConfigError`` before anything is read.

    The legacy file is checked first: anything that is not a legacy catalog
    raises ``LegacyDatabaseError`` before the catalog is touched (a caller that
    checked it already passes what ``legacy.open_legacy`` returned instead of
    its path: it is read, and left open, without a second check). Then the
    catalog is migrated to the newest schema and the rows are imported batch by
    batch; ``progress(rows_done, rows_total)`` is called after each batch.

    The preview images the rows name are copied from ``images_dir`` (default:
    ``images/`` beside the legacy file) into the catalog's image store, and
    listed in each row's ``meta.previews`` (see ``modelvault.images``).
    """
    if policy is not None:
        check_conflict_policy(policy)
    started = time.monotonic()
    own_db = db is None
    with _opened(legacy_db_path) as legacy:
        catalog = db if db is not None else DatabaseManager()
        try:
            report = ImportReport(legacy_path=str(legacy.path), layout=int(legacy.layout))
            notes = _RowNotes()
            images = LegacyImages.checked(
                legacy.path, images_dir, catalog.images_dir, catalog.display_url, notes
            )
            catalog.init_db()
            chosen = policy if policy is not None else catalog.settings.conflict_policy
            _Run(legacy, catalog, report, progress, chosen, images, notes).run()
            report.images = images.finish()
        finally:
            if own_db:
                catalog.dispose()
    report.seconds = round(time.monotonic() - started, 3)
    log.info(
        "imported %s: %d rows read, %d imported, %d merged, %d moved, %d staged, "
        "%d duplicates, %d conflicts, %d already present, in %.1f s",
        report.legacy_path,
        report.rows_read,
        report.imported,
        report.merged,
        report.moved,
        report.staged,
        report.duplicates,
        report.conflicts,
        report.already_present,
        report.seconds,
    )
    return report


@contextmanager
def _opened(legacy: str | os.PathLike[str] | LegacyCatalog) -> Iterator[LegacyCatalog]:
    """The legacy catalog to read: opened (and closed) here when given by path."""
    if isinstance(legacy, LegacyCatalog):
        yield legacy
        return
    with open_legacy(legacy) as opened:
        yield opened


@dataclass(slots=True)
class _Entry:
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
    sha256: str | None
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
        ours = cleaning.json_text(self.meta)
        return ours if self.extra_head is None else self.extra_head + ours[1:]  # less its "{"

    def full_meta(self) -> dict[str, Any]:
        """The row's meta: the user's keys, then modelvault's."""
        if self.extra_head is None:
            return self.meta
        full: dict[str, Any] = json.loads(self.meta_json())
        return full

    def pending(
        self, status: PendingStatus, sha256: str | None, reason: str | None, source: str
    ) -> tuple[Any, ...]:
        """The values of its staging row, in ``PENDING_COLUMNS`` order."""
        tags = "[" + ", ".join(map(_tag_json, self.tags)) + "]"  # json.dumps's very text
        return (
            self.path, self.name, self.type, self.size_bytes, self.created_at, self.meta_json(),
            tags, self.legacy_id, source, _STATUS_TEXT[status], 0, reason, sha256,
            self.stored_key,
        )  # fmt: skip

    def model(self, now: datetime) -> tuple[Any, ...]:
        """The values of its model row, in ``MODEL_COLUMNS`` order."""
        return (
            self.sha256, self.path, self.name, self.type, None, self.size_bytes,
            self.mtime_ns, self.created_at, now, self.meta_json(), self.stored_key,
        )  # fmt: skip

    def hashed(self) -> HashedFile:
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


def _unusable(path: str) -> str | None:
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


_JSON_SPACE = " \t\n\r"

# An enum's ``value`` is a property: looked up per staged row, a dict is quicker.
_STATUS_TEXT = {status: status.value for status in PendingStatus}


@functools.lru_cache(maxsize=4096)
def _tag_json(spec: TagSpec) -> str:
    """A tag of a staging row's ``tags``, as JSON text (a file has few distinct ones)."""
    return json.dumps(spec.to_json())


@dataclass
class _BatchResult:
    """Counts of one batch (``OUTCOMES``), added to the report only once its
    transaction committed."""

    imported: int = 0
    merged: int = 0
    moved: int = 0
    staged: int = 0
    duplicates: int = 0
    conflicts: int = 0
    already_present: int = 0
    failed: int = 0
    warnings: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Prepared:
    """A legacy batch with its rows in v3 form, and what was noted about them."""

    batch: LegacyBatch
    entries: list[_Entry]
    notes: list[tuple[Any, str]]


class _RowNotes:
    """Warnings about the rows of the batch being prepared. On PostgreSQL the next
    batch is prepared while this one is written, so they reach the report with
    their batch: the report lists warnings in the order the rows are read, however
    the two overlap."""

    def __init__(self) -> None:
        self.current: list[tuple[Any, str]] = []

    def __call__(self, legacy_id: Any, reason: str) -> None:
        self.current.append((legacy_id, reason))

    def take(self) -> list[tuple[Any, str]]:
        taken, self.current = self.current, []
        return taken


@dataclass(frozen=True)
class _Inserts:
    models: BulkInsert
    links: BulkInsert
    pending: BulkInsert


class _Run:
    """One import run: the legacy file, the catalog, the tag ids and the report.

    A batch is read and its rows put in v3 form (``_prepared_batches``: no catalog
    access), then given their tags and written (``_write``). A helper thread
    prepares the next batch while this one is written (PostgreSQL) or committed
    (SQLite): see ``_Ahead``.
    """

    def __init__(
        self,
        legacy: LegacyCatalog,
        db: DatabaseManager,
        report: ImportReport,
        progress: Progress | None,
        policy: str,
        images: LegacyImages,
        notes: _RowNotes,
    ) -> None:
        self.legacy = legacy
        self.images = images
        self.notes = notes
        self.db = db
        self.report = report
        self.progress = progress
        self.source = str(legacy.path)
        self.policy = policy
        # Paths that cleaning produced (NUL replaced, a blob or number read as text)
        # -> the legacy id that holds it: only these can collide with another row's.
        self.cleaned_paths: dict[str, int] = {}
        self.tags = LegacyTags(legacy, db, report, TAG_CACHE)
        self.inserts: _Inserts | None = None
        self.lookups = Lookups()

    def run(self) -> None:
        total = self.legacy.count_models()
        with self.db.session_scope() as session:  # see the module's docstring: the order
            in_hash_order = session.execute(select(Model.sha256).limit(1)).first() is None
        self.tags.register_all(TAG_CHUNK)
        with (
            _collector_paused(),
            self._connection() as conn,
            _Ahead(self._prepared_batches(in_hash_order)) as batches,
        ):
            eager = conn.dialect.name == "postgresql"  # see _Ahead: when the next is prepared
            for prepared in batches:
                if eager:
                    batches.allow_next()
                links = self.tags.links_by_model(prepared.batch.rows, prepared.batch.links)
                for legacy_id, reason in prepared.notes:
                    self.report.warn("models", legacy_id, reason)
                for entry in prepared.entries:
                    legacy = entry.meta["legacy"]
                    entry.tags = self.tags.of_row(links.get(entry.legacy_id, ()), legacy)
                read = len(prepared.batch.rows)
                prepared.batch.rows.clear()  # they live on in entries: free the rest now
                prepared.batch.links.clear()
                if prepared.entries:
                    self._write(conn, prepared.entries, before_commit=batches.allow_next)
                    self.report.rows_read += len(prepared.entries)
                if self.progress is not None and read:
                    done = self.report.rows_read
                    self.progress(done, max(total, done))

    def _prepared_batches(self, in_hash_order: bool) -> Iterator[_Prepared]:
        """The legacy batches with their rows in v3 form (no catalog access)."""
        size = self.db.settings.import_batch_size
        for batch in self.legacy.batches(size, in_hash_order=in_hash_order):
            entries = [self._entry(row) for row in batch.rows]
            yield _Prepared(batch, entries, self.notes.take())

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The connection every batch is written on, tuned for bulk writes while it lasts."""
        with self.db.translate_errors(), self.db.engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            restore = _tune_for_bulk(conn)
            try:
                yield conn
            finally:
                with suppress(conn.dialect.loaded_dbapi.Error):
                    restore()

    # -- rows (no catalog access: the helper thread of _Ahead runs these) -------

    def _entry(self, row: LegacyRow) -> _Entry:
        """Turn a legacy row into catalog values, keeping everything else in meta.

        Runs for every row: the common values (an int, a size that is a count,
        an empty hash) take a quick test here before any call.
        """
        created_ms = row.created_at
        legacy: dict[str, Any] = {
            "source": self.source,
            "id": row.id,
            "created_at_ms": created_ms
            if type(created_ms) is int
            else cleaning.jsonable(created_ms),
        }
        self._keep_bytes(row, legacy)
        raw_path = row.path
        path_clash = None
        if isinstance(raw_path, str) and "\x00" not in raw_path:
            path: str = raw_path
        else:
            path, path_clash = self._cleaned_path(row.id, raw_path)
            legacy["path"] = cleaning.jsonable(raw_path)
        size = row.size_bytes
        if type(size) is not int or size < 0:
            size = cleaning.legacy_count(size, "size_bytes", legacy)
        mtime_ns = None
        if self.legacy.layout is LegacyLayout.V1:
            mtime_ns = cleaning.layout1_fields(row, legacy)
        created_at = cleaning.from_ms(created_ms)
        if created_at is None:
            created_at = utcnow()
            self.notes(
                row.id,
                f"created_at {created_ms!r} is not a time in milliseconds; now is used",
            )
        meta, extra_head = self._user_meta(row, legacy)
        users_keys = len(meta) - 1
        self.images.add_previews(row.id, meta)
        if extra_head is not None:  # the user's keys live on as text: see _Entry.extra_head
            previews = meta.get(PREVIEWS)
            ours = {LEGACY: legacy} if previews is None else {LEGACY: legacy, PREVIEWS: previews}
            if len(meta) == users_keys + len(ours):
                meta = ours
            else:
                extra_head = None  # keys modelvault does not know of came: the whole object
        raw_hash = row.hash_hex
        if raw_hash is None or (type(raw_hash) is str and not raw_hash):
            sha256, seen_mtime_ns = None, None  # the legacy app never hashed it
        else:
            sha256, seen_mtime_ns = self._usable_hash(row, path, size, legacy)
        key = stored_key(path)  # a Windows path is keyed by Windows' rules, wherever this runs
        return _Entry(
            row.id,
            path,
            path if key is None else key,
            key,
            cleaning.name_of(row.name, path, legacy),
            cleaning.model_type_of(row.type, path, legacy),
            size,
            mtime_ns if seen_mtime_ns is None else seen_mtime_ns,
            created_at,
            meta,
            sha256,
            [],
            path_clash,
            _unusable(path),
            extra_head,
        )

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

    def _cleaned_path(self, legacy_id: int, raw: Any) -> tuple[str, str | None]:
        """The path of a row whose stored path is not storable text, and why it is
        a conflict if that path is another row's (None when it is its own).

        A path stored as text without NUL is unique in the legacy file and always
        keeps its place. A cleaned one (NUL -> U+FFFD, a blob or number read as
        text) may equal another row's path: it is then staged as a conflict at a
        path of its own, ``"<path> (legacy id N)"``, the same on every run.
        """
        path = cleaning.storable(cleaning.text(raw) or "")
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
        was seen unchanged (see ``cleaning.file_changed``)."""
        raw = cleaning.text(row.hash_hex)
        if not raw:
            return None, None  # '' (or NULL): the legacy app never hashed it
        sha = parse_sha256(raw)
        why, seen_mtime_ns = None, None
        if sha is None:
            why = f"hash_hex {raw!r} is not a SHA-256 (64 hex digits)"
        elif (
            self.legacy.layout is LegacyLayout.V1 and str(row.hash_algo).strip().lower() != "sha256"
        ):
            why = f"its hash algorithm is {row.hash_algo!r}, not sha256"
        else:
            why, seen_mtime_ns = cleaning.file_changed(row, path, size, self.legacy.layout)
        usable = sha if why is None else None
        if raw != usable:
            legacy["hash_hex"] = raw
        if why is not None:
            legacy["hash_ignored"] = why
            self.notes(row.id, why + "; staged to be hashed")
        return usable, seen_mtime_ns

    def _user_meta(
        self, row: LegacyRow, legacy: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The row's meta, and its extra_json text up to the closing brace when the
        meta is that very object (see ``_Entry.meta_json``)."""
        meta: dict[str, Any] | None = None
        head = None
        if row.meta_json is not None:
            meta_json = cleaning.text(row.meta_json)
            assert meta_json is not None
            value, problem = cleaning.parse_json(meta_json)
            ok = problem in (None, cleaning.REPEATED_KEYS)
            legacy["meta_json" if ok else "meta_json_raw"] = value if ok else meta_json
            if not ok:
                self.notes(row.id, f"meta_json {problem}; its text is kept")
        extra = row.extra_json
        if type(extra) is not str:
            extra = cleaning.text(extra)
        if extra is not None:
            value, problem = cleaning.parse_json(extra)
            ok = problem in (None, cleaning.REPEATED_KEYS)
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

    # -- writing --------------------------------------------------------------

    def _write(
        self, conn: Connection, entries: list[_Entry], before_commit: Callable[[], None]
    ) -> None:
        """Write one batch in one transaction, again if a concurrent writer got in first;
        ``before_commit`` is called when only the commit is left to do.

        A unique-key violation is tried again only when the catalog changed since
        the batch was looked at (another writer got in between); otherwise the
        same write would fail the same way, and ``MigrationError`` says so at once.
        """
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            known_tags = dict(self.tags.ids)
            looked_at: list[CatalogState] = []
            try:
                with (
                    self.db.translate_errors(),
                    Session(bind=conn, expire_on_commit=False) as session,
                    session.begin(),
                ):
                    result = self._write_batch(session, entries, looked_at)
                    before_commit()
                break
            except CatalogError as exc:
                self.tags.ids = known_tags  # ids of tags created in the rolled-back transaction
                if not isinstance(exc.__cause__, IntegrityError) or not looked_at:
                    raise
                if attempt == BATCH_ATTEMPTS or self._state_now(entries) == looked_at[0]:
                    raise self._write_failed(entries, exc.__cause__) from exc.__cause__
                log.info(
                    "batch collided with a concurrent writer; reading it again (%s)",
                    exc,
                )
        report = self.report
        for outcome in OUTCOMES:
            setattr(report, outcome, getattr(report, outcome) + getattr(result, outcome))
        for legacy_id, reason in result.warnings:
            report.warn("models", legacy_id, reason)

    def _state_now(self, entries: Sequence[_Entry]) -> CatalogState:
        with self.db.session_scope() as session:
            return self.lookups.state(session, entries)

    def _write_failed(self, entries: Sequence[_Entry], exc: IntegrityError) -> MigrationError:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        return MigrationError(
            f"{len(entries)} legacy rows (ids {min(e.legacy_id for e in entries)} to "
            f"{max(e.legacy_id for e in entries)}) of {self.source} "
            f"cannot be written to the catalog at {self.db.display_url} ({detail}); the "
            "batches before them are in, and no other program changed the catalog meanwhile, "
            "so trying again would fail the same way: please report this with the legacy file."
        )

    def _write_batch(
        self, session: Session, entries: list[_Entry], looked_at: list[CatalogState]
    ) -> _BatchResult:
        state = self.lookups.state(session, entries)
        looked_at.append(state)
        result = _BatchResult()
        now = utcnow()
        models: list[tuple[Any, ...]] = []
        links: list[tuple[Any, ...]] = []
        staged: list[tuple[Any, ...]] = []
        colliding: list[_Entry] = []
        new_hashes: set[str] = set()
        # Keys of the new models' Windows paths: another spelling of one settles (a POSIX
        # path is its own key, and legacy paths are unique).
        new_keys: set[str] = set()
        # Looked up once: the loop runs for every row.
        held, source, tag_ids = state.held, self.source, self.tags.ids
        for entry in entries:
            sha, key = entry.sha256, entry.stored_key
            new_in_batch = sha in new_hashes or (key is not None and key in new_keys)
            placement = place(entry, held(entry, new_in_batch), source)
            where = placement.place
            if where is Place.NEW:
                assert sha is not None
                new_hashes.add(sha)
                if key is not None:
                    new_keys.add(key)
                models.append(entry.model(now))
                links += [(sha, tag_ids[spec.name]) for spec in entry.tags]
                result.imported += 1
            elif where is Place.STAGE:
                staged.append(entry.pending(PendingStatus.PENDING, None, None, source))
                result.staged += 1
            elif where is Place.PRESENT:
                result.already_present += 1
                if placement.warning is not None:
                    result.warnings.append((entry.legacy_id, placement.warning))
            elif where is Place.SETTLE:
                colliding.append(entry)
            elif where is Place.CONFLICT:
                why = entry.path_clash
                staged.append(entry.pending(PendingStatus.CONFLICT, sha, why, self.source))
                result.conflicts += 1
                result.warnings.append((entry.legacy_id, f"conflict: {why}"))
            else:
                why = entry.unusable_path
                staged.append(entry.pending(PendingStatus.FAILED, None, why, self.source))
                result.failed += 1
                result.warnings.append((entry.legacy_id, f"failed: {why}"))
        inserts = self._inserts(session)
        # In primary-key order: each index page is written once, not once per row.
        # New models are new in this transaction, so their links cannot exist yet.
        inserts.models.execute(session, sorted(models, key=itemgetter(0)))
        inserts.links.execute(session, sorted(links))
        for entry in colliding:
            staged.extend(self._settle(session, entry, result))
        inserts.pending.execute(session, staged)
        return result

    def _inserts(self, session: Session) -> _Inserts:
        if self.inserts is None:
            dialect = session.get_bind().dialect
            self.inserts = _Inserts(
                bulk_insert(MODELS, MODEL_COLUMNS, dialect, json_text=("meta",)),
                bulk_insert(model_tags, ("model_sha256", "tag_id"), dialect),
                bulk_insert(PENDING, PENDING_COLUMNS, dialect, json_text=("meta", "tags")),
            )
        return self.inserts

    def _settle(
        self, session: Session, entry: _Entry, result: _BatchResult
    ) -> list[tuple[Any, ...]]:
        # The model moves here only if this row's file is there and its own is gone.
        live = os.path.exists if os.path.exists(entry.path) else None
        settled = settle_file(
            session,
            entry.hashed(),
            policy=self.policy,
            path_is_live=live,
            tag_cache=self.tags.ids,
        )
        if settled.outcome is Outcome.IMPORTED:
            result.imported += 1
        elif settled.outcome is Outcome.MERGED:
            result.merged += 1
        elif settled.outcome is Outcome.MOVED:
            result.moved += 1
        else:
            duplicate = settled.outcome is Outcome.DUPLICATE
            status = PendingStatus.DUPLICATE if duplicate else PendingStatus.CONFLICT
            if duplicate:
                result.duplicates += 1
            else:
                result.conflicts += 1
            result.warnings.append((entry.legacy_id, f"{status.value}: {settled.reason}"))
            return [entry.pending(status, entry.sha256, settled.reason, self.source)]
        return []


# -- running ------------------------------------------------------------------------


def _tune_for_bulk(conn: Connection) -> Callable[[], None]:
    """Settings of the import's own connection that suit bulk writes; returns
    what puts them back (the connection goes back to the pool afterwards).

    SQLite: a 16 MiB page cache, so the pages of the random-key indexes (sha256,
    model_tags) stay in memory across a batch. (PostgreSQL connections never
    prepare statements on the server: ``db.engine`` sets that for every one.)
    """
    raw: Any = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite":
        before = raw.execute("PRAGMA cache_size").fetchone()[0]
        raw.execute(f"PRAGMA cache_size = {-SQLITE_CACHE_KIB}")
        return lambda: raw.execute(f"PRAGMA cache_size = {int(before)}")
    return lambda: None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while batches are built and written: it
    would walk every object of a batch many times over, and a batch's objects
    are freed by reference counting (the few cycles a batch leaves, its session's,
    wait for the next collection). Restored, even on error."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_DONE = object()


class _Ahead:
    """The items of ``items``, each computed by a helper thread before the consumer
    asks for it, never more than one ahead (memory holds two batches at most).

    The consumer says when the helper may compute the next item
    (``allow_next``): on PostgreSQL as soon as it takes one, since the server
    works while Python prepares; on SQLite only when the batch's ``COMMIT``
    starts, the longest call that leaves the interpreter lock free. Alongside
    the look-ups and ``settle_file``, whose statements take the lock back for
    every row, the consumer would wait for the helper up to the interpreter's
    switch interval at every row; alongside the multi-row inserts too, it
    measured more CPU and memory and saved no time.

    Taking an item allows it if the consumer did not, so nothing waits forever.
    An error in the helper is raised where its item would have come; ``close``
    stops the helper, which finishes the item it is computing and closes
    ``items`` in its own thread.
    """

    def __init__(self, items: Iterator[Any]) -> None:
        self._items = items
        self._ready: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
        self._may_compute = threading.Semaphore(0)
        self._allowed = False  # the consumer's own: whether the next item was allowed
        self._finished = False
        self._stop = threading.Event()
        self._helper = threading.Thread(
            target=self._produce, name="modelvault-import-reader", daemon=True
        )
        self._helper.start()

    def __enter__(self) -> _Ahead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> _Ahead:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        self.allow_next()
        item, error = self._ready.get()
        self._allowed = False
        if error is not None or item is _DONE:
            self._finished = True
            if error is not None:
                raise error
            raise StopIteration
        return item

    def allow_next(self) -> None:
        """Let the helper compute the next item now (once per item; more calls do nothing)."""
        if not self._allowed:
            self._allowed = True
            self._may_compute.release()

    def close(self) -> None:
        self._stop.set()
        self._may_compute.release()  # wakes a helper waiting to be allowed
        self._helper.join()

    def _produce(self) -> None:
        try:
            while True:
                self._may_compute.acquire()
                if self._stop.is_set():
                    return
                item = next(self._items, _DONE)
                self._ready.put((item, None))
                if item is _DONE:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._ready.put((_DONE, exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()  # a generator's open reads end here, in the thread that runs it


__all__ = ["MAX_WARNINGS", "ImportReport", "Progress", "import_legacy_data"]
