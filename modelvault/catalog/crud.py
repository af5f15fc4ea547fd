"""Writing a model as a caller gives it, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelvault.catalog.stamp_meta import with_file_stat
from modelvault.catalog.tags import TagSpec, ensure_tags, link_tags
from modelvault.catalog.values import model_values
from modelvault.db.keyed import same_file
from modelvault.db.models import Model
from modelvault.errors import AlreadyExistsError
from modelvault.file_stamp import FILE_STAT
from modelvault.normalize import normalize_sha256


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
