"""Database layer: engine factory, column types and the ORM models of the v3 schema."""

from modelvault.db.engine import create_catalog_engine, is_sqlite
from modelvault.db.models import (
    Base,
    Model,
    PendingImport,
    PendingStatus,
    Tag,
    model_tags,
)

__all__ = [
    "Base",
    "Model",
    "PendingImport",
    "PendingStatus",
    "Tag",
    "create_catalog_engine",
    "is_sqlite",
    "model_tags",
]
