"""The log of deletions: each model or staging row a user deleted, whole.

Revision ID: v5
Revises: v4
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v5"
down_revision: str | Sequence[str] | None = "v4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deleted_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column(
            "deleted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("record", sa.JSON(), server_default="{}", nullable=False),
        sa.CheckConstraint("kind IN ('model', 'queued')", name=op.f("ck_deleted_records_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deleted_records")),
    )
    op.create_index(op.f("ix_deleted_records_sha256"), "deleted_records", ["sha256"])


def downgrade() -> None:
    op.drop_index(op.f("ix_deleted_records_sha256"), table_name="deleted_records")
    op.drop_table("deleted_records")
