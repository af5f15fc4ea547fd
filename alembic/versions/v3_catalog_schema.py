"""The v3 catalog schema: models, tags, model_tags, pending_import.

Revision ID: v3
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v3"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'pending', 'claimed', 'missing', 'failed', 'duplicate', 'conflict'"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    server_default = None if nullable else sa.func.now()
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=server_default, nullable=nullable
    )


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("type", sa.String(length=64), server_default="other", nullable=False),
        sa.Column("base", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.Column("meta", sa.JSON(), server_default="{}", nullable=False),
        sa.CheckConstraint("length(sha256) = 64", name=op.f("ck_models_sha256_length")),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_models")),
        sa.UniqueConstraint("path", name=op.f("uq_models_path")),
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("color", sa.String(length=7), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("name", name=op.f("uq_tags_name")),
    )
    op.create_table(
        "model_tags",
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_sha256"],
            ["models.sha256"],
            name=op.f("fk_model_tags_model_sha256_models"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"], ["tags.id"], name=op.f("fk_model_tags_tag_id_tags"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("model_sha256", "tag_id", name=op.f("pk_model_tags")),
    )
    op.create_index(op.f("ix_model_tags_tag_id"), "model_tags", ["tag_id"])
    op.create_table(
        "pending_import",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("type", sa.String(length=64), server_default="other", nullable=False),
        sa.Column("base", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        _timestamp("created_at"),
        sa.Column("meta", sa.JSON(), server_default="{}", nullable=False),
        sa.Column("tags", sa.JSON(), server_default="[]", nullable=False),
        sa.Column("legacy_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _timestamp("not_before", nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        _timestamp("lease_expires_at", nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_pending_import_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_import")),
        sa.UniqueConstraint("path", name=op.f("uq_pending_import_path")),
    )
    op.create_index(
        op.f("ix_pending_import_status_not_before"), "pending_import", ["status", "not_before"]
    )
    op.create_index(op.f("ix_pending_import_status_id"), "pending_import", ["status", "id"])


def downgrade() -> None:
    op.drop_table("pending_import")
    op.drop_table("model_tags")
    op.drop_table("tags")
    op.drop_table("models")
