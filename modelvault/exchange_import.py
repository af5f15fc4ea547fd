"""An export (``modelvault.exchange``) merged into a catalog by SHA-256.

The file is read twice, as a stream (a JSON Lines export never whole in memory):
first to check it all (every line a record of a known kind with fields of the
right types, the ``end`` line there with the counts of what came before it),
so that a file that is truncated, damaged or not an export of ours is refused
with one sentence before anything is written; then to write it, in one
transaction (all of it or nothing), committed in flushed batches.

What meets what is settled by the catalog's usual rules and conflict policy
(``merge`` fills empty fields, ``keep`` changes none, ``replace`` overwrites;
tags and previews are always united: ``catalog.settle.settle_file``):

- a model whose content is new and whose path is free is inserted as it was
  exported, both timestamps kept;
- a model whose content is catalogued at the same path is combined with it;
  at another path: the model moves there if its file is gone, else the export's
  copy is queued as a ``duplicate`` row;
- a path catalogued with other content: a ``conflict`` row, nothing overwritten;
- a tag that exists keeps its colour (``replace`` takes the export's; ``merge``
  fills a tag without one); queued rows are added unless a row waits at that
  path already; deleted records are added unless the same one is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, or_, select, update
from sqlalchemy.orm import Session

from modelvault.catalog.settle import HashedFile, Outcome, settle_file
from modelvault.catalog.tags import TagSpec, ensure_tags, link_tags
from modelvault.database import DatabaseManager
from modelvault.db.batches import chunked, insert_ignoring_duplicates
from modelvault.db.models import DeletedRecord, Model, PendingImport, PendingStatus, Tag
from modelvault.db.types import as_utc
from modelvault.errors import ExchangeError, ImageStoreError, ModelVaultError
from modelvault.exchange import FORMAT, SECTIONS, VERSION, images_folder, records_in
from modelvault.images import ImageStore, is_stored_name
from modelvault.normalize import normalize_color, normalize_sha256, normalize_tag_name
from modelvault.pathkey import is_own_key, path_key, stored_key
from modelvault.presence import path_is_live

BATCH = 500
KINDS = {kind for kind, _ in SECTIONS}
STATUSES = {status.value for status in PendingStatus}
PENDING_TABLE: Table = PendingImport.__table__  # type: ignore[assignment]
MODEL_TABLE: Table = Model.__table__  # type: ignore[assignment]
DELETED_TABLE: Table = DeletedRecord.__table__  # type: ignore[assignment]
Records = Iterator[tuple[str, dict[str, Any]]]


@dataclass
class ImportReport:
    path: str
    policy: str
    tags_added: int = 0
    tags_recoloured: int = 0
    models_added: int = 0
    merged: int = 0
    moved: int = 0
    duplicates: int = 0
    conflicts: int = 0
    queued_added: int = 0
    queued_present: int = 0
    deleted_added: int = 0
    images_listed: int = 0
    images_copied: int = 0
    images_not_found: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Bad(Exception):
    """What is wrong with a record (turned into the one sentence that names the file)."""


# -- reading and checking the file -------------------------------------------------


class ExportFile:
    """An export on disk, read as a stream of ``(kind, record)``; ``check()`` first."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self.layout = self._layout()
        self.counts: dict[str, int] = {}

    def _layout(self) -> str:
        try:
            with open(self.path, "rb") as file:
                first = file.readline(1 << 20)
        except OSError as exc:
            raise self._refused(f"it cannot be read ({exc.strerror or exc})") from exc
        try:
            head = json.loads(first)
        except ValueError:
            head = None
        if isinstance(head, dict) and head.get("layout") == "lines":
            self._check_head(head)
            return "lines"
        if not first.startswith(b'{"format":"' + FORMAT.encode()):
            raise self._refused("it is not a modelvault catalog export")
        return "json"

    def _check_head(self, head: dict[str, Any]) -> None:
        if head.get("format") != FORMAT:
            raise self._refused("it is not a modelvault catalog export")
        if head.get("version") != VERSION:
            raise self._refused(
                f"it is an export of version {head.get('version')!r}, and this modelvault "
                f"reads version {VERSION}: import it with the modelvault that wrote it"
            )

    def _refused(self, why: str) -> ExchangeError:
        return ExchangeError(f"{self.path} cannot be imported: {why}; nothing was written.")

    def records(self) -> Records:
        return self._lines() if self.layout == "lines" else self._document()

    def _lines(self) -> Records:
        with open(self.path, encoding="utf-8", errors="strict") as file:
            file.readline()
            ended = False
            for number, line in enumerate(file, start=2):
                if ended:
                    raise self._refused(f"line {number} follows the end line")
                try:
                    entry = json.loads(line)
                except ValueError as exc:
                    raise self._refused(f"line {number} is not JSON ({exc})") from None
                if not isinstance(entry, dict) or len(entry) != 1:
                    raise self._refused(f"line {number} is not one record")
                ((kind, record),) = entry.items()
                if kind == "end":
                    self._check_end(record)
                    ended = True
                    continue
                yield kind, record
            if not ended:
                raise self._refused("it ends before its end line: it is cut short (truncated)")

    def _document(self) -> Records:
        try:
            with open(self.path, encoding="utf-8", errors="strict") as file:
                document = json.load(file)
        except ValueError as exc:
            raise self._refused(
                f"it is not whole JSON ({getattr(exc, 'msg', exc)}): cut short or damaged"
            ) from None
        if not isinstance(document, dict):
            raise self._refused("it is not a modelvault catalog export")
        self._check_head(document)
        if "end" not in document:
            raise self._refused("it has no end counts")
        for kind, section in SECTIONS:
            for record in records_in(document, section):
                yield kind, record
        self._check_end(document["end"])

    def _check_end(self, end: object) -> None:
        if not isinstance(end, dict):
            raise self._refused("its end line is not a count of records")
        for kind, section in SECTIONS:
            if end.get(section) != self.counts.get(kind, 0):
                raise self._refused(
                    f"it says it holds {end.get(section)!r} {section} but holds "
                    f"{self.counts.get(kind, 0)}: it is damaged"
                )

    def check(self) -> None:
        """Read the whole file once and refuse it if anything in it is wrong."""
        try:
            for index, (kind, record) in enumerate(self._counted()):
                try:
                    check_record(kind, record)
                except (_Bad, ModelVaultError) as exc:
                    raise self._refused(
                        f"its {kind} record {index + 1} is not valid: {exc}"
                    ) from None
        except UnicodeDecodeError:
            raise self._refused("it is not UTF-8 text") from None
        except OSError as exc:
            raise self._refused(f"it cannot be read ({exc.strerror or exc})") from exc

    def _counted(self) -> Records:
        self.counts = {}
        for kind, record in self.records():
            if kind not in KINDS:
                raise self._refused(f"it holds a record of an unknown kind {kind!r}")
            self.counts[kind] = self.counts.get(kind, 0) + 1
            yield kind, record


def _text(record: dict[str, Any], key: str, *, optional: bool = False) -> None:
    value = record.get(key)
    if value is None and optional:
        return
    if not isinstance(value, str) or (not optional and not value):
        raise _Bad(f"{key} is {value!r}, not a text")


def _number(record: dict[str, Any], key: str) -> None:
    value = record.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _Bad(f"{key} is {value!r}, not a whole number")


def _time(record: dict[str, Any], key: str, *, optional: bool = False) -> None:
    value = record.get(key)
    if value is None and optional:
        return
    try:
        parsed = as_utc(value) if isinstance(value, str) and "+" in value else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise _Bad(f"{key} is {value!r}, not a time with its zone")


def _mapping(record: dict[str, Any], key: str) -> None:
    if not isinstance(record.get(key), dict):
        raise _Bad(f"{key} is not a JSON object")


def check_record(kind: str, record: object) -> None:
    if not isinstance(record, dict):
        raise _Bad("it is not a JSON object")
    if kind == "tag":
        normalize_tag_name(record.get("name"))
        normalize_color(record.get("color"))
        _time(record, "created_at")
    elif kind == "model":
        normalize_sha256(record.get("sha256"))
        for key in ("path", "name", "type"):
            _text(record, key)
        _text(record, "base", optional=True)
        _number(record, "size_bytes")
        _number(record, "mtime_ns")
        _time(record, "created_at")
        _time(record, "updated_at")
        _mapping(record, "meta")
        tags = record.get("tags")
        if not isinstance(tags, list):
            raise _Bad("tags is not a list")
        for tag in tags:
            normalize_tag_name(tag)
    elif kind == "queued":
        _check_queued(record)
    elif kind == "deleted":
        if record.get("kind") not in ("model", "queued"):
            raise _Bad(f"kind is {record.get('kind')!r}, not model or queued")
        _text(record, "path")
        _text(record, "name")
        _time(record, "deleted_at")
        _mapping(record, "record")
    elif kind == "image" and not is_stored_name(record.get("file")):
        raise _Bad(f"{record.get('file')!r} is not the name of a stored image")


def _check_queued(record: dict[str, Any]) -> None:
    for key in ("path", "name", "type"):
        _text(record, key)
    for key in ("base", "source", "last_error"):
        _text(record, key, optional=True)
    for key in ("size_bytes", "legacy_id", "attempts"):
        _number(record, key)
    _time(record, "created_at")
    _time(record, "not_before", optional=True)
    _mapping(record, "meta")
    if not isinstance(record.get("tags"), list):
        raise _Bad("tags is not a list")
    if record.get("status") not in STATUSES:
        raise _Bad(f"status is {record.get('status')!r}")
    if record.get("sha256") is not None:
        normalize_sha256(record["sha256"])


# -- writing ------------------------------------------------------------------------


def import_catalog(
    db: DatabaseManager,
    source: str | os.PathLike[str],
    *,
    policy: str | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ImportReport:
    """Merge the export at ``source`` into ``db`` (see the module docstring); one
    transaction. A file that is not a whole, valid export raises ``ExchangeError``
    before anything is written."""
    chosen = policy or db.settings.conflict_policy
    export = ExportFile(source)
    export.check()
    report = ImportReport(str(export.path), chosen)
    with db.session_scope(immediate=True) as session:
        _Writer(session, report, progress).write(export.records())
    _copy_images(db, export, report)
    return report


class _Writer:
    def __init__(
        self, session: Session, report: ImportReport, progress: Callable[[str, int], None] | None
    ) -> None:
        self.session = session
        self.report = report
        self.progress = progress
        self.tag_ids: dict[str, int] = {}
        self.batch: list[dict[str, Any]] = []
        self.kind = ""

    def write(self, records: Records) -> None:
        done = 0
        for kind, record in records:
            if kind != self.kind:
                self.flush()
                self.kind, done = kind, 0
            if kind == "image":
                self.report.images_listed += 1
                continue
            self.batch.append(record)
            done += 1
            if len(self.batch) >= BATCH:
                self.flush()
                if self.progress is not None:
                    self.progress(kind, done)
        self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        work = {"tag": self._tags, "model": self._models, "queued": self._queued}
        work.get(self.kind, self._deleted)(self.batch)
        self.session.flush()
        self.session.expunge_all()  # memory stays flat: no row is needed again
        self.batch = []

    def _tags(self, records: list[dict[str, Any]]) -> None:
        names = [normalize_tag_name(r["name"]) for r in records]
        known = dict(
            self.session.execute(select(Tag.name, Tag.color).where(Tag.name.in_(names))).all()
        )
        fresh = []
        for name, record in zip(names, records, strict=True):
            color = normalize_color(record.get("color"))
            if name not in known:
                fresh.append(
                    {"name": name, "color": color, "created_at": as_utc(record["created_at"])}
                )
            elif self._recolours(known[name], color):
                self.session.execute(update(Tag).where(Tag.name == name).values(color=color))
                self.report.tags_recoloured += 1
        insert_ignoring_duplicates(self.session, Tag.__table__, fresh)  # type: ignore[arg-type]
        self.report.tags_added += len(fresh)

    def _recolours(self, ours: str | None, theirs: str | None) -> bool:
        if theirs is None or theirs == ours:
            return False
        return self.report.policy == "replace" or (self.report.policy == "merge" and ours is None)

    def _models(self, records: list[dict[str, Any]]) -> None:
        shas = [normalize_sha256(r["sha256"]) for r in records]
        known = set(self.session.scalars(select(Model.sha256).where(Model.sha256.in_(shas))))
        held = self._held_paths([r["path"] for r in records])
        fresh: list[dict[str, Any]] = []
        later: list[dict[str, Any]] = []
        for sha, record in zip(shas, records, strict=True):
            key = _key(record["path"])
            if sha in known or key in held:
                later.append(record)
                continue
            known.add(sha)
            held.add(key)
            fresh.append(_model_row(sha, record))
        if fresh:
            self.session.execute(insert(MODEL_TABLE), fresh)
            self.report.models_added += len(fresh)
            self._link(records, {row["sha256"] for row in fresh})
        for record in later:
            self._settle(record)

    def _held_paths(self, paths: list[str]) -> set[str]:
        own = [p for p in paths if is_own_key(p)]
        keyed = [path_key(p) for p in paths if not is_own_key(p)]
        rows = self.session.execute(
            select(Model.path, Model.path_key).where(
                or_(Model.path.in_(own), Model.path_key.in_(keyed))
            )
        )
        return {key or path for path, key in rows}

    def _link(self, records: list[dict[str, Any]], shas: set[str]) -> None:
        specs = [TagSpec(normalize_tag_name(t)) for r in records for t in r["tags"]]
        ids = ensure_tags(self.session, specs, self.tag_ids)
        pairs = (
            (normalize_sha256(r["sha256"]), ids[normalize_tag_name(t)])
            for r in records
            if normalize_sha256(r["sha256"]) in shas
            for t in r["tags"]
        )
        link_tags(self.session, pairs)

    def _settle(self, record: dict[str, Any]) -> None:
        item = HashedFile(
            sha256=normalize_sha256(record["sha256"]),
            path=record["path"],
            name=record["name"],
            type=record["type"],
            base=record.get("base"),
            size_bytes=record.get("size_bytes"),
            mtime_ns=record.get("mtime_ns"),
            created_at=as_utc(record["created_at"]),
            meta=record["meta"],
            tags=[TagSpec(normalize_tag_name(t)) for t in record["tags"]],
        )
        settled = settle_file(
            self.session,
            item,
            policy=self.report.policy,
            path_is_live=path_is_live,
            tag_cache=self.tag_ids,
        )
        outcome = settled.outcome
        if outcome in (Outcome.DUPLICATE, Outcome.CONFLICT):
            row = _queued_row({**record, "tags": [t.to_json() for t in item.tags]})
            row.update(status=outcome.value, sha256=item.sha256, last_error=settled.reason)
            insert_ignoring_duplicates(self.session, PENDING_TABLE, [row])
        counts = {
            Outcome.IMPORTED: "models_added",
            Outcome.MERGED: "merged",
            Outcome.MOVED: "moved",
            Outcome.DUPLICATE: "duplicates",
            Outcome.CONFLICT: "conflicts",
        }
        field = counts.get(outcome, "merged")
        setattr(self.report, field, getattr(self.report, field) + 1)

    def _queued(self, records: list[dict[str, Any]]) -> None:
        paths = [r["path"] for r in records]
        present: set[str] = set()
        for chunk in chunked(paths):
            present.update(
                self.session.scalars(
                    select(PendingImport.path).where(PendingImport.path.in_(chunk))
                )
            )
        rows = [_queued_row(r) for r in records if r["path"] not in present]
        if rows:
            self.session.execute(insert(PENDING_TABLE), rows)
        self.report.queued_added += len(rows)
        self.report.queued_present += len(records) - len(rows)

    def _deleted(self, records: list[dict[str, Any]]) -> None:
        paths = list({r["path"] for r in records})
        seen = {
            (kind, path, as_utc(when))
            for kind, path, when in self.session.execute(
                select(DeletedRecord.kind, DeletedRecord.path, DeletedRecord.deleted_at).where(
                    DeletedRecord.path.in_(paths)
                )
            )
        }
        rows = []
        for record in records:
            when = as_utc(record["deleted_at"])
            if (record["kind"], record["path"], when) in seen:
                continue
            seen.add((record["kind"], record["path"], when))
            rows.append(
                {
                    "kind": record["kind"],
                    "sha256": record.get("sha256"),
                    "path": record["path"],
                    "name": record["name"],
                    "deleted_at": when,
                    "record": record["record"],
                }
            )
        if rows:
            self.session.execute(insert(DELETED_TABLE), rows)
        self.report.deleted_added += len(rows)


def _key(path: str) -> str:
    return path if is_own_key(path) else path_key(path)


def _model_row(sha: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "sha256": sha,
        "path": record["path"],
        "path_key": stored_key(record["path"]),
        "name": record["name"],
        "type": record["type"],
        "base": record.get("base"),
        "size_bytes": record.get("size_bytes"),
        "mtime_ns": record.get("mtime_ns"),
        "created_at": as_utc(record["created_at"]),
        "updated_at": as_utc(record["updated_at"]),
        "meta": record["meta"],
    }


def _queued_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": record["path"],
        "path_key": stored_key(record["path"]),
        "name": record["name"],
        "type": record["type"],
        "base": record.get("base"),
        "size_bytes": record.get("size_bytes"),
        "created_at": as_utc(record["created_at"]),
        "meta": record["meta"],
        "tags": record["tags"],
        "legacy_id": record.get("legacy_id"),
        "source": record.get("source"),
        "status": record.get("status", PendingStatus.PENDING.value),
        "attempts": record.get("attempts") or 0,
        "last_error": record.get("last_error"),
        "not_before": as_utc(record.get("not_before")),
        "sha256": record.get("sha256"),
    }


def _copy_images(db: DatabaseManager, export: ExportFile, report: ImportReport) -> None:
    """Images the export lists that the store lacks are taken from the folder beside
    the export (``export --with-images``); those found nowhere are counted."""
    folder = images_folder(export.path)
    store_dir = db.images_dir
    if store_dir is None:
        report.images_not_found = report.images_listed
        return
    store = ImageStore(store_dir)
    for kind, record in export.records():
        if kind != "image" or store.path_of(record["file"]).exists():
            continue
        source = folder / record["file"]
        if not source.is_file():
            report.images_not_found += 1
            continue
        try:
            report.images_copied += int(store.add(source).copied)
        except ImageStoreError:
            raise
        except Exception:  # a damaged or unreadable image beside the export: counted
            report.images_not_found += 1
