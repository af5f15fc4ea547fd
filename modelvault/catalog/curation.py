"""Curating the catalog: tags, fields, notes and deletions, as a person makes them.

Each function is one transaction on a catalog (``CatalogAccess``, such as a
``DatabaseManager``): SQLite's write lock is taken at BEGIN, and on PostgreSQL
the rows a function changes are locked (``FOR UPDATE``) before they are read, as
the workers lock theirs, so a curation and a worker or a scan writing the same
model take turns and neither loses the other's change. Bad input is refused
with a ``ModelVaultError`` before anything is written.

Nothing here touches a file: deleting a model removes its catalog entry and
tag links; its model file and its preview images stay where they are. What a
deletion takes out (a model with its tags and colours, a staging row with its
tags and notes) is kept whole in the table ``deleted_records``
(``deleted_records()``), so it can be seen and put back by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, selectinload

from modelvault.catalog.deleted import DeletedEntry, deleted_row
from modelvault.catalog.records import ModelRecord, PendingRecord, TagRecord
from modelvault.catalog.staged_rows import (
    forgettable_rows,
    forgettable_statuses,
    retag_queue,
    staging_row_ids,
)
from modelvault.catalog.tags import TagSpec, ensure_tags, link_tags
from modelvault.catalog.values import RESERVED_META_KEYS
from modelvault.db.access import CatalogAccess
from modelvault.db.batches import chunked
from modelvault.db.models import DeletedRecord, Model, PendingImport, Tag, model_tags
from modelvault.db.types import utcnow
from modelvault.errors import (
    AlreadyExistsError,
    CatalogError,
    NotFoundError,
    ValidationError,
)
from modelvault.identify.catalog import base_chosen
from modelvault.normalize import (
    MAX_TYPE,
    normalize_color,
    normalize_sha256,
    normalize_tag_name,
    normalize_type,
)

T = TypeVar("T")

NOTE = "description"  # the meta key of a model's note, as the legacy app named it
MAX_NAME, MAX_BASE = 512, 64  # the widths of the name and base columns
# PostgreSQL errors after which the same transaction, run again, can succeed: a
# unique key a concurrent commit took, a deadlock with a worker, a serialization failure.
_RETRYABLE: Final = frozenset({"23505", "40P01", "40001"})
_TRIES = 5


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()  # a field ``update_model`` leaves as it is


@dataclass(frozen=True)
class TagChange:
    """A tag after a rename, a colour change or a deletion; ``models``: how many
    carry (or carried) it; ``queued``: staging rows whose tags were changed too."""

    tag: TagRecord
    models: int
    queued: int = 0


@dataclass(frozen=True)
class Copies:
    """Every copy of one content: the model (None if none holds it) and each staged row."""

    sha256: str
    model: ModelRecord | None
    queued: tuple[PendingRecord, ...]

    @property
    def count(self) -> int:
        return len(self.queued) + (self.model is not None)


# -- transactions -------------------------------------------------------------


def writing(db: CatalogAccess, work: Callable[[Session], T]) -> T:
    """``work`` in one writing transaction, run again after a deadlock with a worker
    or a concurrent commit of the same key (PostgreSQL), as the workers do."""
    for attempt in range(1, _TRIES + 1):
        try:
            with db.session_scope(immediate=True) as session:
                return work(session)
        except CatalogError as exc:
            cause = exc.__cause__
            code = getattr(getattr(cause, "orig", None), "sqlstate", None)
            if attempt == _TRIES or not isinstance(cause, DBAPIError) or code not in _RETRYABLE:
                raise
    raise AssertionError("unreachable")


def locked_model(session: Session, sha256: str) -> Model:
    """The model, its row locked for this transaction; ``NotFoundError`` if it is gone."""
    model = session.scalar(
        select(Model)
        .options(selectinload(Model.tags))
        .where(Model.sha256 == sha256)
        .with_for_update()
    )
    if model is None:
        raise NotFoundError(
            f"no model with sha256 {sha256} is catalogued (any more): "
            "list them with `modelvault models`."
        )
    return model


def _touch(session: Session, *where: Any) -> int:
    """Say that the models matching ``where`` changed now (their ``updated_at``)."""
    result = session.execute(
        update(Model)
        .where(*where)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _carriers(tag_id: int) -> Any:
    return Model.sha256.in_(select(model_tags.c.model_sha256).where(model_tags.c.tag_id == tag_id))


# -- tags ---------------------------------------------------------------------


def ensure_tag(db: CatalogAccess, name: str, color: str | None = None) -> TagRecord:
    """The tag ``name``, created if there is none (with ``color``); an existing tag
    keeps its colour, or takes ``color`` if it has none (``set_tag_color`` changes it)."""
    spec = TagSpec(normalize_tag_name(name), normalize_color(color))

    def work(session: Session) -> TagRecord:
        ids = ensure_tags(session, [spec])
        return TagRecord.of(session.get_one(Tag, ids[spec.name]))

    return writing(db, work)


def require_tag(session: Session, name: str, *, lock: bool = False) -> Tag:
    """The tag of this (normalised) name, or ``NotFoundError`` naming the known tags."""
    query = select(Tag).where(Tag.name == name)
    tag = session.scalar(query.with_for_update() if lock else query)
    if tag is None:
        raise NotFoundError(f"there is no tag {name!r}: {known_tags(session)}.")
    return tag


def known_tags(session: Session, shown: int = 20) -> str:
    """A clause listing the tags there are, for messages about one that is not."""
    names = list(session.scalars(select(Tag.name).order_by(Tag.name).limit(shown + 1)))
    if not names:
        return "the catalog has no tags yet"
    more = ", ..." if len(names) > shown else ""
    return f"the tags are {', '.join(names[:shown])}{more} (see `modelvault tags`)"


def rename_tag(db: CatalogAccess, old: str, new: str, *, merge: bool = False) -> TagChange:
    """Rename a tag; into a tag that exists only with ``merge`` (its models then carry
    that tag, which takes the old one's colour if it has none, and the old one goes).

    Staging rows carrying the old name carry the new one, so the old tag does not
    come back when they are catalogued.
    """
    old_name, new_name = normalize_tag_name(old), normalize_tag_name(new)
    if old_name == new_name:
        raise ValidationError(f"the tag {old_name!r} has that name already: give another name.")

    def work(session: Session) -> TagChange:
        tag = require_tag(session, old_name, lock=True)
        target = session.scalar(select(Tag).where(Tag.name == new_name).with_for_update())
        if target is not None and not merge:
            raise AlreadyExistsError(
                f"the tag {new_name!r} exists already: merge {old_name!r} into it "
                "(--merge, or merge=True), or choose another name."
            )
        models = _touch(session, _carriers(tag.id))
        if target is None:
            tag.name = new_name
            target = tag
        else:
            carriers = session.scalars(
                select(model_tags.c.model_sha256).where(model_tags.c.tag_id == tag.id)
            )
            link_tags(session, ((sha, target.id) for sha in carriers))
            target.color = target.color or tag.color
            session.execute(delete(model_tags).where(model_tags.c.tag_id == tag.id))
            session.delete(tag)
        session.flush()
        queued = retag_queue(session, old_name, new_name)
        return TagChange(TagRecord.of(target), models, queued)

    return writing(db, work)


def set_tag_color(db: CatalogAccess, name: str, color: str | None) -> TagRecord:
    """Give a tag a colour (any CSS form, stored as ``#rrggbb``), or none with None."""
    tag_name, tag_color = normalize_tag_name(name), normalize_color(color)

    def work(session: Session) -> TagRecord:
        tag = require_tag(session, tag_name, lock=True)
        tag.color = tag_color
        session.flush()
        return TagRecord.of(tag)

    return writing(db, work)


def delete_tag(db: CatalogAccess, name: str) -> TagChange:
    """Delete a tag: no model carries it any more (their ``updated_at`` says when),
    and staging rows lose it too, so it does not come back with them."""
    return delete_tags(db, [name])[0]


def delete_tags(db: CatalogAccess, names: Iterable[str]) -> list[TagChange]:
    """``delete_tag`` for several tags at once: all of them, or none if one is not there."""
    wanted = _tag_names(names)

    def work(session: Session) -> list[TagChange]:
        tags = [require_tag(session, name, lock=True) for name in wanted]
        changes = []
        for tag in tags:
            record = TagRecord.of(tag)
            models = _touch(session, _carriers(tag.id))
            session.execute(delete(model_tags).where(model_tags.c.tag_id == tag.id))
            session.delete(tag)
            session.flush()
            changes.append(TagChange(record, models, retag_queue(session, tag.name, None)))
        return changes

    return writing(db, work)


# -- one model ------------------------------------------------------------------


def add_tags(
    db: CatalogAccess, sha256: str, names: Iterable[str], color: str | None = None
) -> tuple[ModelRecord, list[str]]:
    """Tag a model with each name (tags created as needed, with ``color`` if new or
    colourless). Returns the model and the names it did not carry before."""
    sha = normalize_sha256(sha256)
    specs = [TagSpec(name, normalize_color(color)) for name in _tag_names(names)]

    def work(session: Session) -> tuple[ModelRecord, list[str]]:
        model = locked_model(session, sha)
        carried = {tag.name for tag in model.tags}
        ids = ensure_tags(session, specs)
        added = [name for name in ids if name not in carried]
        link_tags(session, ((sha, ids[name]) for name in added))
        if added:
            model.updated_at = utcnow()
        session.flush()
        session.expire(model, ["tags"])
        return ModelRecord.of(model), added

    return writing(db, work)


def remove_tags(
    db: CatalogAccess, sha256: str, names: Iterable[str]
) -> tuple[ModelRecord, list[str]]:
    """Take tags off a model. A name that is no tag at all is refused; one the model
    does not carry is no error. Returns the model and the names taken off."""
    sha = normalize_sha256(sha256)
    wanted = _tag_names(names)

    def work(session: Session) -> tuple[ModelRecord, list[str]]:
        model = locked_model(session, sha)
        tags = {name: require_tag(session, name) for name in wanted}
        removed = [tag.name for tag in model.tags if tag.name in tags]
        if removed:
            ids = [tags[name].id for name in removed]
            session.execute(
                delete(model_tags).where(
                    model_tags.c.model_sha256 == sha, model_tags.c.tag_id.in_(ids)
                )
            )
            model.updated_at = utcnow()
        session.flush()
        session.expire(model, ["tags"])
        return ModelRecord.of(model), removed

    return writing(db, work)


def _tag_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    unique = list(dict.fromkeys(normalize_tag_name(name) for name in names))
    if not unique:
        raise ValidationError("no tag given: name at least one.")
    return unique


def update_model(
    db: CatalogAccess,
    sha256: str,
    *,
    name: object = UNSET,
    type: object = UNSET,
    base: object = UNSET,
    note: object = UNSET,
    meta: object = UNSET,
) -> ModelRecord:
    """Change a model's fields: ``name``, ``type``, ``base`` (None or "" clears it;
    a base set here is never changed by identification, a cleared one may be filled again),
    ``note`` (its ``meta["description"]``; None or "" removes it) and ``meta``, a
    mapping of keys to set (a key given None is removed; modelvault's own keys
    such as ``previews`` and ``legacy`` are refused). Fields not given stay."""
    sha = normalize_sha256(sha256)
    columns = _column_changes(name, type, base)
    patch = _meta_patch(note, meta)
    if not columns and not patch:
        raise ValidationError("nothing to change: give a name, type, base, note or meta.")

    def work(session: Session) -> ModelRecord:
        model = locked_model(session, sha)
        for key, value in columns.items():
            setattr(model, key, value)
        if "base" in columns:
            model.meta = base_chosen(model.meta, by_user=columns["base"] is not None)
        if patch:
            merged = {**model.meta, **patch}
            model.meta = {k: v for k, v in merged.items() if v is not None}
        model.updated_at = utcnow()
        session.flush()
        return ModelRecord.of(model)

    return writing(db, work)


def _column_changes(name: object, type_: object, base: object) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if name is not UNSET:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise ValidationError(
                f"{name!r} is not a model name: give a text of 1 to {MAX_NAME} characters."
            )
        changes["name"] = name
    if type_ is not UNSET:
        if not isinstance(type_, str) or not type_.strip() or len(type_.strip()) > MAX_TYPE:
            raise ValidationError(
                f"{type_!r} is not a model type: give a word such as lora or checkpoint."
            )
        changes["type"] = normalize_type(type_)
    if base is not UNSET:
        if base is not None and (not isinstance(base, str) or len(base) > MAX_BASE):
            raise ValidationError(
                f"base {base!r} is not valid: give a text of at most {MAX_BASE} characters "
                "such as SDXL, or none."
            )
        changes["base"] = base.strip() or None if isinstance(base, str) else None
    return changes


def _meta_patch(note: object, meta: object) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    if meta is not UNSET:
        if not isinstance(meta, Mapping) or not all(isinstance(k, str) for k in meta):
            raise ValidationError("meta must be a mapping of text keys to JSON values.")
        reserved = sorted(set(meta) & set(RESERVED_META_KEYS))
        if reserved:
            raise ValidationError(
                f"meta key(s) {', '.join(reserved)} are modelvault's own record: "
                "change the other keys."
            )
        try:
            json.dumps(dict(meta), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"meta cannot be stored as JSON: {exc}.") from None
        patch.update(meta)
    if note is not UNSET:
        if NOTE in patch:
            raise ValidationError(f"the note is given twice (note and meta[{NOTE!r}]): give one.")
        if note is not None and not isinstance(note, str):
            raise ValidationError(f"the note {note!r} is not a text.")
        patch[NOTE] = note or None
    return patch


# -- deleting -------------------------------------------------------------------


def delete_models(db: CatalogAccess, sha256s: Sequence[str]) -> list[ModelRecord]:
    """Delete models from the catalog (entries and tag links; never a file, nor a
    preview image), each kept whole in ``deleted_records``. All or none: a model
    that is not catalogued (any more) is refused and nothing is deleted."""
    shas = list(dict.fromkeys(normalize_sha256(sha) for sha in sha256s))
    if not shas:
        raise ValidationError("no model given: name at least one to delete.")

    def work(session: Session) -> list[ModelRecord]:
        gone = [ModelRecord.of(locked_model(session, sha)) for sha in shas]
        now = utcnow()
        rows = [
            deleted_row("model", model.sha256, model.path, model.name, model, now) for model in gone
        ]
        session.execute(insert(DeletedRecord), rows)
        for chunk in chunked(shas):
            session.execute(delete(model_tags).where(model_tags.c.model_sha256.in_(chunk)))
            session.execute(delete(Model).where(Model.sha256.in_(chunk)))
        return gone

    return writing(db, work)


def forget_pending(
    db: CatalogAccess, ids: Iterable[int] = (), *, statuses: Iterable[str] = ()
) -> list[PendingRecord]:
    """Delete staging rows, by id and/or by status, each kept whole in
    ``deleted_records``. A row a worker holds (``claimed``) cannot be forgotten;
    an id that is no staging row is refused, and nothing is deleted."""
    wanted_ids = staging_row_ids(ids)
    wanted_statuses = forgettable_statuses(statuses)
    if not wanted_ids and not wanted_statuses:
        raise ValidationError("nothing to forget: give staging row ids or statuses.")

    def work(session: Session) -> list[PendingRecord]:
        rows = forgettable_rows(session, wanted_ids, wanted_statuses, lock=True)
        records = [PendingRecord.of(row) for row in rows]
        now = utcnow()
        if records:
            session.execute(
                insert(DeletedRecord),
                [deleted_row("queued", r.sha256, r.path, r.name, r, now) for r in records],
            )
        for chunk in chunked([r.id for r in records]):
            session.execute(delete(PendingImport).where(PendingImport.id.in_(chunk)))
        return records

    return writing(db, work)


def rows_to_forget(
    db: CatalogAccess, ids: Iterable[int] = (), *, statuses: Iterable[str] = ()
) -> list[PendingRecord]:
    """The rows ``forget_pending`` would delete now, refused as it would refuse them."""
    wanted_ids, wanted_statuses = staging_row_ids(ids), forgettable_statuses(statuses)
    with db.session_scope() as session:
        rows = forgettable_rows(session, wanted_ids, wanted_statuses, lock=False)
        return [PendingRecord.of(row) for row in rows]


def deleted_records(db: CatalogAccess, *, limit: int | None = None) -> list[DeletedEntry]:
    """What was deleted, newest first: models and forgotten staging rows, whole."""
    query = select(DeletedRecord).order_by(DeletedRecord.id.desc()).limit(limit)
    with db.session_scope() as session:
        return [DeletedEntry.of(row) for row in session.scalars(query)]


# -- looking --------------------------------------------------------------------


def find_copies(db: CatalogAccess, sha256: str) -> Copies:
    """The model of a content (if any) and every staging row found to hold it."""
    sha = normalize_sha256(sha256)
    with db.session_scope() as session:
        return _copies(session, [sha])[0]


def find_duplicates(db: CatalogAccess) -> list[Copies]:
    """Every content found at more than one path: the model (if any) and its staged
    copies (duplicates, conflicts), by the model's name, then SHA-256."""
    staged = PendingImport.sha256
    query = (
        select(staged)
        .where(staged.is_not(None))
        .group_by(staged)
        .having(or_(func.count() > 1, staged.in_(select(Model.sha256))))
    )
    with db.session_scope() as session:
        copies = _copies(session, list(session.scalars(query)))
    return sorted(
        copies, key=lambda c: (c.model is None, c.model and c.model.name.lower(), c.sha256)
    )


def _copies(session: Session, shas: list[str]) -> list[Copies]:
    models: dict[str, ModelRecord] = {}
    queued: dict[str, list[PendingRecord]] = {sha: [] for sha in shas}
    for chunk in chunked(shas):
        query = select(Model).options(selectinload(Model.tags)).where(Model.sha256.in_(chunk))
        models.update((m.sha256, ModelRecord.of(m)) for m in session.scalars(query))
        rows = select(PendingImport).where(PendingImport.sha256.in_(chunk))
        for row in session.scalars(rows.order_by(PendingImport.id)):
            queued[str(row.sha256)].append(PendingRecord.of(row))
    return [Copies(sha, models.get(sha), tuple(queued[sha])) for sha in shas]


def find_queued(db: CatalogAccess, key: str, *, absolute: str | None = None) -> list[PendingRecord]:
    """Staging rows a person may mean by ``key``: its path (or ``absolute``, the
    path as given made absolute), its file name, or the SHA-256 it was found to hold."""
    text_key = key.strip()
    paths = list(dict.fromkeys(p for p in (text_key, absolute) if p))
    match = [PendingImport.path.in_(paths), PendingImport.name == text_key]
    if len(text_key) == 64:
        match.append(PendingImport.sha256 == text_key.lower())
    query = select(PendingImport).where(or_(*match)).order_by(PendingImport.id).limit(50)
    with db.session_scope() as session:
        return [PendingRecord.of(row) for row in session.scalars(query)]


def known_types(db: CatalogAccess) -> dict[str, int]:
    """The model types in use, each with how many models have it, by name."""
    query = select(Model.type, func.count()).group_by(Model.type).order_by(Model.type)
    with db.session_scope() as session:
        return {str(kind): int(count) for kind, count in session.execute(query)}
