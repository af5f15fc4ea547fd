"""Indexes in the orders models are listed in (by name, type, newest; one base model
by name), so a page of a big catalog is read from an index instead of the whole
table being sorted.

SQLite cannot reflect an index on an expression: a later revision that rebuilds
``models`` in batch mode on SQLite must create these again.

Revision ID: v6
Revises: v5
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v6"
down_revision: str | Sequence[str] | None = "v5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> its columns, as modelvault.catalog.browse.SORTS orders by them; the last
# one for the models of one base in name order (the page's base filter) and their count
ORDERS = {
    "ix_models_name_order": ("lower(name)", "name", "path"),
    "ix_models_type_order": ("type", "lower(name)", "path"),
    "ix_models_added_order": ("created_at DESC", "lower(name)", "path"),
    "ix_models_base_order": ("lower(base)", "lower(name)", "name", "path"),
}


def upgrade() -> None:
    for name, columns in ORDERS.items():
        op.create_index(name, "models", [sa.text(column) for column in columns])


def downgrade() -> None:
    for name in ORDERS:
        op.drop_index(name, table_name="models")
