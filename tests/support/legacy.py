"""Helpers the tests of the legacy import share: a catalog's contents, read back."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, select

from modelvault import DatabaseManager, Settings
from modelvault.db.models import Model, PendingImport, Tag, model_tags


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def with_batch(db: DatabaseManager, size: int) -> DatabaseManager:
    """The same catalog, read with another import batch size."""
    return DatabaseManager(db.engine, settings=Settings(db_url="sqlite://", import_batch_size=size))


def snapshot(db: DatabaseManager) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a run can change, without ids and update times."""
    with db.session_scope() as s:
        return {
            "models": sorted(
                (
                    m.sha256,
                    m.path,
                    m.name,
                    m.type,
                    m.size_bytes,
                    m.mtime_ns,
                    m.created_at,
                    json.dumps(m.meta, sort_keys=True),
                )
                for m in s.scalars(select(Model))
            ),
            "tags": sorted((t.name, t.color) for t in s.scalars(select(Tag))),
            "links": sorted(
                s.execute(
                    select(model_tags.c.model_sha256, Tag.name).join(
                        Tag, Tag.id == model_tags.c.tag_id
                    )
                ).all()
            ),
            "pending": sorted(
                (
                    p.path,
                    p.name,
                    p.type,
                    p.size_bytes,
                    p.created_at,
                    p.legacy_id,
                    p.source,
                    p.status,
                    p.sha256,
                    p.last_error,
                    json.dumps(p.meta, sort_keys=True),
                    json.dumps(p.tags),
                )
                for p in s.scalars(select(PendingImport))
            ),
        }


def empty_catalog(db: DatabaseManager) -> None:
    with db.session_scope() as s:
        s.execute(delete(model_tags))
        for table in (Model, PendingImport, Tag):
            s.execute(delete(table))


def models_by_legacy_id(db: DatabaseManager) -> dict[int, Model]:
    with db.session_scope() as s:
        return {m.meta["legacy"]["id"]: m for m in s.scalars(select(Model))}


def pending_by_legacy_id(db: DatabaseManager) -> dict[int | None, PendingImport]:
    with db.session_scope() as s:
        return {p.legacy_id: p for p in s.scalars(select(PendingImport))}


def tags_of(db: DatabaseManager, sha256: str) -> list[str]:
    return [t.name for t in db.get_tags_for_model(sha256)]
