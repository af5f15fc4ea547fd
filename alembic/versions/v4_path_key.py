"""Each path's identity key: ``path_key`` on models and pending_import, indexed.

Two spellings of one Windows path (``c:\\ComfyUI\\...``, ``C:/ComfyUI/...``) name
one file: the catalog compares paths by their key (``modelvault.pathkey``). A
POSIX path is its own key and stores none (NULL); the upgrade gives every other
row its key (the rows whose path does not start with ``/``).

A catalog written before keys may hold two models at one file under two
spellings (a case-only rename on Windows, say). One model per file is the rule
now (the key is unique among models): the most recently updated keeps the key,
and each other one is kept whole with a key no path has, ``?<sha256>:<path>``,
found by its SHA-256 or name as before, never taken for the file (a warning
names it).

Revision ID: v4
Revises: v3
Create Date: 2027-01-18
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from modelvault.pathkey import POSIX, flavour_of, stored_key

revision: str = "v4"
down_revision: str | Sequence[str] | None = "v3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("modelvault.migrations")

KEY_TEXT = sa.String().with_variant(sa.String(collation="C"), "postgresql")
PAGE = 2000  # rows read and keyed at a time
DETACHED = "?"  # starts the key of a model that gave its file's key to another


def upgrade() -> None:
    for table in ("models", "pending_import"):
        op.add_column(table, sa.Column("path_key", KEY_TEXT, nullable=True))
        _fill(table, "sha256" if table == "models" else "id")
    _detach_shared_keys()
    op.create_index(op.f("ix_models_path_key"), "models", ["path_key"], unique=True)
    op.create_index(op.f("ix_pending_import_path_key"), "pending_import", ["path_key"])


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_import_path_key"), table_name="pending_import")
    op.drop_index(op.f("ix_models_path_key"), table_name="models")
    for table in ("pending_import", "models"):
        if op.get_bind().dialect.name == "sqlite":
            # SQLite 3.35+ drops a column in place (a batch copy of models would
            # cascade its drop to model_tags).
            op.execute(f"ALTER TABLE {table} DROP COLUMN path_key")
        else:
            op.drop_column(table, "path_key")


def _fill(name: str, primary_key: str) -> None:
    """The key of every row that has one, read a page at a time in primary key order:
    the rows whose path does not start with "/" (a POSIX path stores none)."""
    bind = op.get_bind()
    table = sa.table(name, sa.column(primary_key), sa.column("path"), sa.column("path_key"))
    pk = table.c[primary_key]
    query = sa.select(pk, table.c.path).order_by(pk).limit(PAGE)
    if flavour_of("/") is POSIX:
        query = query.where(~table.c.path.startswith("/"))
    change = (
        sa.update(table)
        .where(pk == sa.bindparam("row_key"))
        .values(path_key=sa.bindparam("new_key"))
    )
    last = None
    while True:
        rows = bind.execute(query if last is None else query.where(pk > last)).all()
        if not rows:
            return
        last = rows[-1][0]
        keyed = [{"row_key": row_key, "new_key": stored_key(path)} for row_key, path in rows]
        keyed = [item for item in keyed if item["new_key"] is not None]
        if keyed:
            bind.execute(change, keyed)


def _detach_shared_keys() -> None:
    """Where several models share a key, all but the most recently updated take a
    key of their own that no path has."""
    bind = op.get_bind()
    models = sa.table(
        "models",
        sa.column("sha256"),
        sa.column("path"),
        sa.column("path_key"),
        sa.column("updated_at"),
    )
    shared = (
        sa.select(models.c.path_key)
        .where(models.c.path_key.is_not(None))
        .group_by(models.c.path_key)
        .having(sa.func.count() > 1)
    )
    for (key,) in bind.execute(shared).all():
        holders = bind.execute(
            sa.select(models.c.sha256, models.c.path)
            .where(models.c.path_key == key)
            .order_by(models.c.updated_at.desc(), models.c.path)
        ).all()
        kept = holders[0]
        for sha256, path in holders[1:]:
            bind.execute(
                sa.update(models)
                .where(models.c.sha256 == sha256)
                .values(path_key=f"{DETACHED}{sha256}:{path}")
            )
            log.warning(
                "the model %s (%s) is the file of the model %s (%s), spelt another way: "
                "%s keeps the file; %s stays in the catalog, found by its SHA-256 or name",
                sha256, path, kept[0], kept[1], kept[0], sha256,
            )  # fmt: skip
