"""Catalog operations inside a caller's transaction.

These functions take an open ``Session`` and never commit: the caller owns the
transaction, so the CRUD facade, the importer and the worker can combine them
into one atomic unit (upsert the model, get-or-create its tags, link them,
delete the staging row).
"""

from __future__ import annotations

import enum
import json
import ntpath
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelvault.db.keyed import same_file
from modelvault.db.models import Model, PendingImport, PendingStatus, Tag, model_tags
from modelvault.db.types import utcnow
from modelvault.errors import AlreadyExistsError, ValidationError
from modelvault.file_stamp import FILE_STAT
from modelvault.normalize import (
    normalize_color,
    normalize_sha256,
    normalize_tag_name,
    normalize_type,
)
from modelvault.pathkey import renamed_below, stored_key

# Rows per statement when a list of keys goes into an IN (...) clause: well
# under SQLite's and PostgreSQL's parameter limits.
IN_CHUNK = 500

# Top-level ``meta`` keys modelvault itself writes (user keys of these names are
# moved aside on import so neither side is lost).
PREVIOUS_PATHS = "previous_paths"  # where a moved model's file used to be
SUPERSEDED = "superseded"  # notes that gave way when two records of one content met
LEGACY = "legacy"  # what the legacy catalog held that has no column of its own
PREVIEWS = "previews"  # images in the catalog's store: {"sha256", "file", "source"}
PREVIOUS_SHA256 = "previous_sha256"  # content a file held before it was overwritten in place
# FILE_STAT: the file's inode change time and inode, beside mtime_ns (modelvault.file_stamp)
RESERVED_META_KEYS = (LEGACY, PREVIOUS_PATHS, SUPERSEDED, PREVIEWS, PREVIOUS_SHA256, FILE_STAT)

# ``pending_import.source`` of the rows a folder scan stages (modelvault.scan).
SCAN_SOURCE = "scan"
# The mtime a folder scan saw, kept in a staging row's meta until the file is hashed
# (``pending_import`` has no mtime column; the worker takes the file's own stat), with
# the rest of its stamp under FILE_STAT as in a model's meta (see modelvault.file_stamp).
# A ``duplicate`` or ``conflict`` row keeps the stamp the file had when it was hashed.
SCAN_MTIME_NS = "scan_mtime_ns"
_SCAN_STAT_KEYS = (SCAN_MTIME_NS, FILE_STAT)


def without_scan_stat(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """A staging row's meta as a model's: the file's stamp is bookkeeping, not a note
    (a model takes the stamp of the file as it was hashed: ``HashedFile.file_stat``)."""
    if SCAN_MTIME_NS in meta or FILE_STAT in meta:
        return {k: v for k, v in meta.items() if k not in _SCAN_STAT_KEYS}
    return meta


def staged_file_stat(meta: Mapping[str, Any]) -> Mapping[str, int] | None:
    """The ``file_stat`` a staging row's meta holds, if any."""
    marks = meta.get(FILE_STAT)
    return marks if isinstance(marks, Mapping) else None


def with_file_stat(meta: Mapping[str, Any], marks: Mapping[str, int] | None) -> dict[str, Any]:
    """``meta`` holding ``marks`` as its ``file_stat`` (none at all if ``marks`` is None:
    an old stamp must not outlive the size and mtime it went with)."""
    meta = dict(meta)
    if marks:
        meta[FILE_STAT] = dict(marks)
    else:
        meta.pop(FILE_STAT, None)
    return meta


MODEL_FIELDS = ("sha256", "path", "name", "type", "base", "size_bytes", "mtime_ns", "meta")


@dataclass(frozen=True)
class TagSpec:
    """A tag as something asks for it: a normalised name and an optional colour."""

    name: str
    color: str | None = None

    @classmethod
    def parse(cls, value: object) -> TagSpec:
        """From a name, or a ``{"name": ..., "color": ...}`` mapping (the staging form)."""
        if isinstance(value, Mapping):
            return cls(normalize_tag_name(value.get("name")), normalize_color(value.get("color")))
        return cls(normalize_tag_name(value))

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "color": self.color}


def chunked(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def file_name(path: str) -> str:
    """The base name of a path written on any OS (legacy paths may be Windows paths)."""
    return ntpath.basename(path) if "\\" in path else posixpath.basename(path)


def insert_ignoring_duplicates(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows, silently skipping any whose unique key exists (race-free)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(pg_insert(table).on_conflict_do_nothing(), rows)
    elif dialect == "sqlite":
        session.execute(sqlite_insert(table).on_conflict_do_nothing(), rows)
    else:
        session.execute(insert(table).prefix_with("IGNORE"), rows)


def ensure_tags(
    session: Session, specs: Iterable[TagSpec], cache: dict[str, int] | None = None
) -> dict[str, int]:
    """Get or create each tag by name and return ``{name: id}``.

    A tag that exists keeps its colour unless it has none, in which case it
    takes the one asked for (fill what is empty, never overwrite). ``cache``
    (name -> id) lets a long run skip names it has already seen.
    """
    wanted: dict[str, str | None] = {}
    for spec in specs:
        if wanted.get(spec.name) is None:
            wanted[spec.name] = spec.color
    known = cache if cache is not None else {}
    todo = [name for name in wanted if name not in known]
    for names in chunked(todo):
        now = utcnow()
        insert_ignoring_duplicates(
            session,
            Tag.__table__,  # type: ignore[arg-type]
            [{"name": n, "color": wanted[n], "created_at": now} for n in names],
        )
        rows = session.execute(select(Tag.id, Tag.name, Tag.color).where(Tag.name.in_(names)))
        for tag_id, name, color in rows:
            known[name] = tag_id
            if color is None and wanted[name] is not None:
                session.execute(
                    update(Tag)
                    .where(Tag.id == tag_id, Tag.color.is_(None))
                    .values(color=wanted[name])
                )
    return {name: known[name] for name in wanted}


def link_tags(session: Session, pairs: Iterable[tuple[str, int]]) -> None:
    """Link (model sha256, tag id) pairs; links that exist already are kept as they are."""
    rows = [{"model_sha256": sha, "tag_id": tag_id} for sha, tag_id in dict.fromkeys(pairs)]
    for chunk in chunked(rows):
        insert_ignoring_duplicates(session, model_tags, list(chunk))


def model_values(data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Validate the fields of a model given by a caller and put them in normal form.

    With ``partial`` only the keys present are returned (for updates); otherwise
    ``sha256`` and ``path`` are required and the rest get their defaults.
    """
    unknown = set(data) - set(MODEL_FIELDS) - {"tags"}
    if unknown:
        raise ValidationError(
            f"unknown model field(s) {', '.join(sorted(unknown))}: "
            f"use {', '.join(MODEL_FIELDS)} or tags."
        )
    values: dict[str, Any] = {"sha256": normalize_sha256(data.get("sha256"))}
    values.update(file_values(data, partial=partial))
    if "mtime_ns" in data:
        values["mtime_ns"] = _byte_count("mtime_ns", data["mtime_ns"])
    return values


def file_values(data: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """The columns a model and a staging row share, validated and in normal form."""
    values: dict[str, Any] = {}
    path = data.get("path")
    if path is not None or not partial:
        if not isinstance(path, str) or not path.strip():
            raise ValidationError(f"{path!r} is not a path: give the model file's path as text.")
        values["path"] = path
    if "name" in data or not partial:
        name = data.get("name") or (file_name(values["path"]) if "path" in values else None)
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"{name!r} is not a model name: give a non-empty text.")
        values["name"] = name
    if "type" in data or not partial:
        values["type"] = normalize_type(data.get("type"))
    if "size_bytes" in data:
        values["size_bytes"] = _byte_count("size_bytes", data["size_bytes"])
    if "base" in data:
        base = data["base"]
        if base is not None and not isinstance(base, str):
            raise ValidationError(f"base {base!r} is not valid: give a text such as 'SDXL'.")
        values["base"] = base or None
    if "meta" in data or not partial:
        values["meta"] = json_object("meta", data.get("meta") or {})
    return values


MAX_BIGINT = 2**63 - 1


def _byte_count(key: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BIGINT:
        raise ValidationError(
            f"{key} {value!r} is not valid: give a whole number from 0 to {MAX_BIGINT}."
        )
    return value


def json_object(key: str, value: object) -> dict[str, Any]:
    """A mapping that will go into a JSON column, checked now rather than at commit."""
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{key} must be a JSON object (a mapping), not {type(value).__name__}."
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{key} cannot be stored as JSON: {exc}.") from None
    return dict(value)


def upsert_model(session: Session, data: Mapping[str, Any]) -> Model:
    """Insert the model, or update the fields given if its sha256 is catalogued.

    A file belongs to one content: if another model holds the path, in any
    spelling of it (``modelvault.pathkey``), nothing is written and
    ``AlreadyExistsError`` says which.
    """
    existing = session.get(Model, normalize_sha256(data.get("sha256")))
    values = model_values(data, partial=existing is not None)
    tags = [TagSpec.parse(t) for t in data.get("tags") or ()]
    path = values.get("path")
    if path is not None:
        holder = session.execute(
            select(Model.sha256, Model.path).where(same_file(Model, path))
        ).first()
        if holder is not None and holder.sha256 != values["sha256"]:
            spelt = "" if holder.path == path else f" as {holder.path}"
            raise AlreadyExistsError(
                f"{path} is catalogued already{spelt} with other content (sha256 "
                f"{holder.sha256}): delete or move that model first."
            )
    if existing is None:
        model = Model(**values)
        session.add(model)
    else:
        model = existing
        for key, value in _keeping_file_stat(model, values).items():
            setattr(model, key, value)
    session.flush()
    if tags:
        ids = ensure_tags(session, tags)
        link_tags(session, ((model.sha256, tag_id) for tag_id in ids.values()))
        session.expire(model, ["tags"])
    return model


def _keeping_file_stat(model: Model, values: dict[str, Any]) -> dict[str, Any]:
    """An update of a model keeps its ``file_stat`` (bookkeeping, not a note: a caller
    that rewrites the notes does not know it) while the file's path, size and mtime
    stay as they are; once one of them changes, the stamp goes with them."""
    stamp = model.meta.get(FILE_STAT)
    if stamp is None:
        return values
    moved = any(
        key in values and values[key] != getattr(model, key)
        for key in ("path", "size_bytes", "mtime_ns")
    )
    meta = values.get("meta")
    if moved and meta is None:
        values["meta"] = with_file_stat(model.meta, None)
    elif not moved and meta is not None and FILE_STAT not in meta:
        values["meta"] = {**meta, FILE_STAT: stamp}
    return values


class Outcome(str, enum.Enum):
    """What became of a hashed file offered to the catalog."""

    IMPORTED = "imported"  # a new model
    MERGED = "merged"  # the same content at the same path was catalogued already
    MOVED = "moved"  # the catalogued copy is gone: the model now points here
    REPLACED = "replaced"  # a scanned file holds new content: its model follows it
    DUPLICATE = "duplicate"  # the same content lives on at another path
    CONFLICT = "conflict"  # the path is catalogued with other content

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class HashedFile:
    """A file whose content hash is known, with everything the user attached to it."""

    sha256: str
    path: str
    name: str
    type: str = "other"
    base: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    created_at: datetime | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[TagSpec] = ()
    source: str | None = None  # ``SCAN_SOURCE`` for a file a folder scan found
    # The rest of the file's stamp, kept with mtime_ns (``meta["file_stat"]``).
    file_stat: Mapping[str, int] | None = None

    @property
    def scanned(self) -> bool:
        return self.source == SCAN_SOURCE


@dataclass(frozen=True)
class Settled:
    outcome: Outcome
    reason: str | None = None


def settle_file(
    session: Session,
    item: HashedFile,
    *,
    policy: str = "merge",
    path_is_live: Callable[[str], bool] | None = None,
    tag_cache: dict[str, int] | None = None,
) -> Settled:
    """Put a hashed file into the catalog, or say why it cannot go there.

    - new content at a free path: a new model with its tags;
    - content catalogued at this same path: fields combined by ``policy``
      (``merge`` fills empty fields, ``keep`` changes nothing, ``replace``
      overwrites), tags always united: a tag is never dropped;
    - content catalogued at another path: if ``path_is_live`` says that copy is
      gone, the model moves here (policy applied as above; a model named after
      its file takes the new file's name); otherwise this is a
      ``DUPLICATE`` and its tags and previews are merged into the model;
    - the path catalogued with other content: ``CONFLICT``, nothing written;
      unless a folder scan found the file (``item.scanned``): then the file was
      overwritten in place and the model follows its new content
      (``replace_content``).

    A scanned file's stamp (size, mtime, ``file_stat``) is a fact about the
    file, not a note: it is always taken, so the next scan finds the file
    unchanged; and so is its path as the scan spelt it (a file whose name
    changed case only is the same file: ``MOVED`` when a name changed case,
    else ``MERGED``). Wherever a model takes a file's mtime, it takes its
    ``file_stat`` with it.

    Paths are compared by their identity key (``modelvault.pathkey``): on
    Windows, two spellings of one file are one path.

    DUPLICATE and CONFLICT leave the staging row to the caller.
    """
    holder = session.scalar(_locked(select(Model).where(same_file(Model, item.path))))
    if holder is not None and holder.sha256 != item.sha256:
        if item.scanned:
            settled = replace_content(session, holder, item, path_is_live)
            if settled.outcome is Outcome.REPLACED:
                _link_item_tags(session, item, tag_cache)
            return settled
        return Settled(
            Outcome.CONFLICT,
            f"{item.path} is catalogued with sha256 {holder.sha256}, but its content "
            f"now hashes to {item.sha256}",
        )
    model = holder or session.scalar(_locked(select(Model).where(Model.sha256 == item.sha256)))
    if model is None:
        model = Model(
            sha256=item.sha256,
            path=item.path,
            name=item.name,
            type=item.type,
            base=item.base,
            size_bytes=item.size_bytes,
            mtime_ns=item.mtime_ns,
            meta=with_file_stat(item.meta, item.file_stat),
        )
        if item.created_at is not None:
            model.created_at = item.created_at
        session.add(model)
        outcome = Outcome.IMPORTED
    elif model is holder:  # the file of this path, however spelt
        combine_fields(model, item, policy)
        outcome = Outcome.MERGED
        if item.scanned and model.path != item.path:
            renamed = renamed_below(model.path, item.path)
            move_model(model, item.path, item.name, keep_previous=renamed)
            outcome = Outcome.MOVED if renamed else outcome
    elif path_is_live is not None and not path_is_live(model.path):
        combine_fields(model, item, policy)  # first: notes that give way keep their own path
        move_model(model, item.path, item.name)
        outcome = Outcome.MOVED
    else:
        unite_previews(model, item.meta)  # like tags: images of the content join the model
        outcome = Outcome.DUPLICATE
    if item.scanned and outcome is not Outcome.DUPLICATE:
        _take_stamp(model, item)
    session.flush()
    _link_item_tags(session, item, tag_cache)
    if outcome is Outcome.DUPLICATE:
        return Settled(outcome, f"same content as {model.path}")
    return Settled(outcome)


def _locked(query: Select[Any]) -> Select[Any]:
    """The model row locked until the transaction ends (PostgreSQL; SQLite's write lock
    is held from BEGIN), read afresh: the model is read, combined and written back,
    and a note a person wrote meanwhile (``modelvault.curation``) must not be lost."""
    return query.with_for_update().execution_options(populate_existing=True)


def move_model(model: Model, path: str, name: str, *, keep_previous: bool = True) -> None:
    """The model's file is now at ``path`` (its old path goes to ``meta.previous_paths``
    unless ``keep_previous`` is False: the same path, spelt another way). A model
    named after its file takes the new file's ``name``; a name the user gave stays."""
    previous = model.path
    if model.name == file_name(previous):
        model.name = name
    model.path = path  # and its key (db.models: the ORM keeps the two together)
    if keep_previous:
        model.meta = {
            **model.meta,
            PREVIOUS_PATHS: [*model.meta.get(PREVIOUS_PATHS, []), previous],
        }


def _take_stamp(model: Model, item: HashedFile) -> None:
    """The model records the item's file as it was hashed: size, mtime, ``file_stat``."""
    model.size_bytes, model.mtime_ns = item.size_bytes, item.mtime_ns
    if model.meta.get(FILE_STAT) != item.file_stat:
        model.meta = with_file_stat(model.meta, item.file_stat)


def _link_item_tags(session: Session, item: HashedFile, tag_cache: dict[str, int] | None) -> None:
    if item.tags:
        ids = ensure_tags(session, item.tags, tag_cache)
        link_tags(session, ((item.sha256, tag_id) for tag_id in ids.values()))


def replace_content(
    session: Session,
    holder: Model,
    item: HashedFile,
    path_is_live: Callable[[str], bool] | None,
) -> Settled:
    """A scanned file at a catalogued path now holds other content (a re-download).

    The model at the path takes the new sha256 and keeps its tags and notes;
    the old sha256 goes to ``meta["previous_sha256"]``. If a copy of the old
    content was found at another live path (a staging row marked
    ``duplicate`` of it), that path becomes the model of the old content.
    New content that is catalogued already at another path is a ``CONFLICT``:
    two models cannot share one content, and which one the user meant is theirs
    to say.
    """
    other = session.get(Model, item.sha256)
    if other is not None:
        return Settled(
            Outcome.CONFLICT,
            f"{item.path} was overwritten with the content catalogued at {other.path} "
            f"(sha256 {item.sha256}): delete one of the two files or models",
        )
    old_sha = holder.sha256
    meta = with_file_stat(holder.meta, item.file_stat)
    meta[PREVIOUS_SHA256] = [*meta.get(PREVIOUS_SHA256, []), old_sha]
    copy = _live_copy(session, old_sha, path_is_live)
    session.expunge(holder)  # its primary key changes below, behind the ORM's back
    # ON UPDATE CASCADE carries the model's tag links to the new key.
    session.execute(
        update(Model)
        .where(Model.sha256 == old_sha)
        .values(
            sha256=item.sha256,
            path=item.path,  # as the scan spelt it (the same key)
            path_key=stored_key(item.path),
            size_bytes=item.size_bytes,
            mtime_ns=item.mtime_ns,
            meta=meta,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if copy is not None:
        session.add(
            Model(
                sha256=old_sha,
                path=copy.path,
                name=copy.name,
                type=copy.type,
                base=copy.base,
                size_bytes=copy.size_bytes,
                mtime_ns=(copy.meta or {}).get(SCAN_MTIME_NS),
                meta=with_file_stat(
                    without_scan_stat(copy.meta or {}), staged_file_stat(copy.meta or {})
                ),
            )
        )
        session.delete(copy)
    session.flush()
    return Settled(Outcome.REPLACED)


def _live_copy(
    session: Session, sha256: str, path_is_live: Callable[[str], bool] | None
) -> PendingImport | None:
    """A staging row found to hold ``sha256`` at another path that still exists."""
    rows = session.scalars(
        select(PendingImport)
        .where(
            PendingImport.sha256 == sha256,
            PendingImport.status == PendingStatus.DUPLICATE.value,
        )
        .order_by(PendingImport.id)
    )
    for row in rows:
        if path_is_live is None or path_is_live(row.path):
            return row
    return None


def combine_fields(model: Model, item: HashedFile, policy: str) -> None:
    """Apply a conflict policy to a model that meets another record of its content.

    ``merge`` fills what the model lacks, ``keep`` changes no field, ``replace``
    overwrites. Notes are never lost: a ``meta`` value that gives way to the
    other side's (the incoming one under merge and keep, the model's own under
    replace) is kept in ``meta["superseded"]`` with the path it came from.
    Preview lists (``meta["previews"]``) are united under every policy: an image
    is never dropped.
    """
    replace = policy == "replace"
    took_mtime = False
    if policy != "keep":
        for key in ("name", "type", "base", "size_bytes", "mtime_ns"):
            new = getattr(item, key)
            old = getattr(model, key)
            if new is not None and (replace or old is None or (key == "type" and old == "other")):
                setattr(model, key, new)
                took_mtime = took_mtime or key == "mtime_ns"
    model.meta = combine_meta(dict(model.meta), model.path, dict(item.meta), item.path, policy)
    if took_mtime:  # the stamp goes with the mtime it was taken with
        model.meta = with_file_stat(model.meta, item.file_stat)


def combine_meta(
    ours: dict[str, Any], our_path: str, theirs: dict[str, Any], their_path: str, policy: str
) -> dict[str, Any]:
    """Both sides' notes in one ``meta``; the values that give way go to ``superseded``."""
    superseded = list(ours.pop(SUPERSEDED, []))
    theirs = {k: v for k, v in theirs.items() if k not in (SUPERSEDED, PREVIOUS_PATHS)}
    previews = _united_previews(ours, theirs)
    if LEGACY not in ours and LEGACY in theirs:
        # Where a model came from is bookkeeping, not a user's field: it is taken
        # under every policy, so a later import recognises the row it came from.
        ours[LEGACY] = theirs.pop(LEGACY)
    if policy == "replace":
        combined = {**ours, **theirs}
        lost = {k: v for k, v in ours.items() if k in theirs and theirs[k] != v}
        lost_path = our_path
    elif policy == "merge":
        combined = {**theirs, **ours}
        lost = {k: v for k, v in theirs.items() if k in ours and ours[k] != v}
        lost_path = their_path
    else:  # keep: the model's notes stay exactly as they are
        combined = dict(ours)
        lost = {k: v for k, v in theirs.items() if k not in ours or ours[k] != v}
        lost_path = their_path
    entry = {"path": lost_path, "meta": lost}
    if lost and entry not in superseded:
        superseded.append(entry)
    if superseded:
        combined[SUPERSEDED] = superseded
    if previews is not None:
        combined[PREVIEWS] = previews
    return combined


def unite_previews(model: Model, meta: Mapping[str, Any]) -> None:
    """Add the previews of another record of the model's content to the model's."""
    previews = _united_previews(dict(model.meta), dict(meta))
    if previews is not None and previews != model.meta.get(PREVIEWS):
        model.meta = {**model.meta, PREVIEWS: previews}


def _united_previews(ours: dict[str, Any], theirs: dict[str, Any]) -> list[Any] | None:
    """Both preview lists in one, ours first, each entry once; both sides lose the
    key so the policy never weighs it. None (keys left alone) unless every side
    that has one holds a list."""
    lists = [side[PREVIEWS] for side in (ours, theirs) if PREVIEWS in side]
    if not lists or not all(isinstance(value, list) for value in lists):
        return None
    ours.pop(PREVIEWS, None)
    theirs.pop(PREVIEWS, None)
    united: list[Any] = []
    for entry in (entry for value in lists for entry in value):
        if entry not in united:
            united.append(entry)
    return united
