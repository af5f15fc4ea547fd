"""Models and tags as a caller gives them: written, read, linked and counted.

``upsert_model`` works inside a caller's transaction; every other function here
is one transaction on a ``DatabaseManager`` (its public methods of the same names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, selectinload

from modelvault.catalog.records import ModelRecord, TagRecord
from modelvault.catalog.stamp_meta import with_file_stat
from modelvault.catalog.tags import TagSpec, ensure_tags, link_tags
from modelvault.catalog.values import model_values
from modelvault.db.keyed import same_file
from modelvault.db.models import Model, Tag, model_tags
from modelvault.db.types import utcnow
from modelvault.errors import AlreadyExistsError, NotFoundError
from modelvault.file_stamp import FILE_STAT
from modelvault.normalize import normalize_color, normalize_sha256, normalize_tag_name

if TYPE_CHECKING:
    from modelvault.database import DatabaseManager


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


def save_model(db: DatabaseManager, data: Mapping[str, Any]) -> ModelRecord:
    """Add a model, or update the fields given for a sha256 already catalogued.

    ``data`` holds model columns (``sha256`` and ``path`` at least for a new
    model) and optionally ``tags``: names or ``{"name", "color"}`` mappings.
    """
    with db.session_scope(immediate=True) as session:
        model = upsert_model(session, data)
        return ModelRecord.of(model)


def get_model(db: DatabaseManager, sha256: str) -> ModelRecord | None:
    sha = normalize_sha256(sha256)
    with db.session_scope() as session:
        model = session.scalar(model_query().where(Model.sha256 == sha))
        return None if model is None else ModelRecord.of(model)


def get_model_by_path(db: DatabaseManager, path: str) -> ModelRecord | None:
    """The model of the file at ``path``, however the path is spelt (on Windows
    ``c:\\models\\a.ckpt`` and ``C:/Models/A.ckpt`` are one file: ``modelvault.pathkey``)."""
    with db.session_scope() as session:
        model = session.scalar(model_query().where(same_file(Model, path)))
        return None if model is None else ModelRecord.of(model)


def get_models_by_tag(db: DatabaseManager, name: str) -> list[ModelRecord]:
    tag_name = normalize_tag_name(name)
    with db.session_scope() as session:
        models = session.scalars(
            model_query()
            .join(Model.tags)
            .where(Tag.name == tag_name)
            .order_by(Model.name, Model.path)
        )
        return [ModelRecord.of(m) for m in models]


def catalog_counts(db: DatabaseManager) -> dict[str, int]:
    """Models, tags and tag links in the catalog."""
    with db.session_scope() as session:
        return {
            "models": session.scalar(select(func.count()).select_from(Model)) or 0,
            "tags": session.scalar(select(func.count()).select_from(Tag)) or 0,
            "links": session.scalar(select(func.count()).select_from(model_tags)) or 0,
        }


def create_tag(db: DatabaseManager, name: str, color: str | None = None) -> TagRecord:
    """Create a tag (name trimmed and lower-cased, colour as ``#rrggbb``)."""
    tag_name = normalize_tag_name(name)
    tag_color = normalize_color(color)
    with db.session_scope(immediate=True) as session:
        if session.scalar(select(Tag.id).where(Tag.name == tag_name)) is not None:
            raise AlreadyExistsError(f"the tag {tag_name!r} exists already.")
        tag = Tag(name=tag_name, color=tag_color)
        session.add(tag)
        session.flush()
        return TagRecord.of(tag)


def get_tag(db: DatabaseManager, name: str) -> TagRecord | None:
    tag_name = normalize_tag_name(name)
    with db.session_scope() as session:
        tag = session.scalar(select(Tag).where(Tag.name == tag_name))
        return None if tag is None else TagRecord.of(tag)


def list_tags(db: DatabaseManager) -> list[tuple[TagRecord, int]]:
    """Every tag with the number of models that carry it, by name."""
    with db.session_scope() as session:
        rows = session.execute(
            select(Tag, func.count(model_tags.c.model_sha256))
            .outerjoin(model_tags, model_tags.c.tag_id == Tag.id)
            .group_by(Tag.id)
            .order_by(Tag.name)
        )
        return [(TagRecord.of(tag), count) for tag, count in rows]


def tag_model(db: DatabaseManager, sha256: str, tag_id: int) -> None:
    """Link a tag to a model (idempotent; a new link is a change of the model's
    ``updated_at``). Unknown model or tag: ``NotFoundError``."""
    sha = normalize_sha256(sha256)
    with db.session_scope(immediate=True) as session:
        _require(session, sha, tag_id)
        model = session.get_one(Model, sha)
        if session.get_one(Tag, tag_id) not in model.tags:
            link_tags(session, [(sha, tag_id)])
            model.updated_at = utcnow()


def untag_model(db: DatabaseManager, sha256: str, tag_id: int) -> bool:
    """Remove a link; returns whether there was one."""
    sha = normalize_sha256(sha256)
    with db.session_scope(immediate=True) as session:
        result = session.execute(
            delete(model_tags).where(
                model_tags.c.model_sha256 == sha, model_tags.c.tag_id == tag_id
            )
        )
        if result.rowcount:  # type: ignore[attr-defined]
            session.execute(update(Model).where(Model.sha256 == sha).values(updated_at=utcnow()))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def get_tags_for_model(db: DatabaseManager, sha256: str) -> list[TagRecord]:
    sha = normalize_sha256(sha256)
    with db.session_scope() as session:
        if session.get(Model, sha) is None:
            raise NotFoundError(f"no model with sha256 {sha} is catalogued.")
        tags = session.scalars(
            select(Tag)
            .join(model_tags, model_tags.c.tag_id == Tag.id)
            .where(model_tags.c.model_sha256 == sha)
            .order_by(Tag.name)
        )
        return [TagRecord.of(t) for t in tags]


def _require(session: Session, sha: str, tag_id: int) -> None:
    if session.get(Model, sha) is None:
        raise NotFoundError(f"no model with sha256 {sha} is catalogued: add it before tagging it.")
    if isinstance(tag_id, bool) or not isinstance(tag_id, int) or session.get(Tag, tag_id) is None:
        raise NotFoundError(f"no tag with id {tag_id!r} exists: create it with create_tag first.")


def model_query() -> Any:
    return select(Model).options(selectinload(Model.tags))
