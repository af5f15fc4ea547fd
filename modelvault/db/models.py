"""The v3 schema as typed SQLAlchemy models.

This is a contract: apps and tools read these tables directly, and the Alembic
revisions (``alembic/versions``: ``v3``, then ``v4``) must create exactly this.
``alembic check`` proves that they agree.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from modelvault.db.types import UTCDateTime, utcnow
from modelvault.pathkey import stored_key

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Paths can be long (Windows allows 32k characters); no length limit on either side.
PathText = String()
# A path's identity key where it is not the path itself (modelvault.pathkey: a
# Windows path; NULL for a POSIX path, its own key), compared and sorted as code
# points on every backend: PostgreSQL's "C" collation is SQLite's own (BINARY), so
# the index serves the range of keys under a folder in the order the scan walks them.
KeyText = String().with_variant(String(collation="C"), "postgresql")


def key_of_path(context: DefaultExecutionContext) -> str | None:
    """The default of ``path_key`` in an INSERT that does not give it: what the
    row's ``path`` stores (each row's own, in a many-row INSERT)."""
    params: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
    path = params.get("path")
    return stored_key(path) if isinstance(path, str) else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class PendingStatus(str, enum.Enum):
    """Where a staging row stands. Rows are deleted by finishing them, or when a person
    forgets them (``curation.forget_pending``: kept in ``deleted_records``)."""

    PENDING = "pending"  # waiting to be hashed
    CLAIMED = "claimed"  # a worker holds its lease
    MISSING = "missing"  # the file is gone; the row keeps its tags and notes
    FAILED = "failed"  # I/O errors on every attempt; see last_error
    DUPLICATE = "duplicate"  # same bytes are catalogued at another live path
    CONFLICT = "conflict"  # a clash the conflict policy could not settle

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset(
    {PendingStatus.MISSING, PendingStatus.FAILED, PendingStatus.DUPLICATE, PendingStatus.CONFLICT}
)
_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in PendingStatus)


model_tags = Table(
    "model_tags",
    Base.metadata,
    Column(
        "model_sha256",
        String(64),
        ForeignKey("models.sha256", ondelete="CASCADE", onupdate="CASCADE"),
        primary_key=True,
    ),
    Column("tag_id", Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "tag_id"),
)


class Model(Base):
    """One row per distinct file content."""

    __tablename__ = "models"
    __table_args__ = (CheckConstraint("length(sha256) = 64", name="sha256_length"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    path: Mapped[str] = mapped_column(PathText, unique=True)
    name: Mapped[str] = mapped_column(String(512))
    type: Mapped[str] = mapped_column(String(64), default="other", server_default="other")
    base: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    # One model per file, however its path is spelt (modelvault.pathkey; with path's
    # own uniqueness: a POSIX path is its own key and stores none).
    path_key: Mapped[str | None] = mapped_column(
        KeyText, default=key_of_path, index=True, unique=True
    )

    tags: Mapped[list[Tag]] = relationship(
        secondary=model_tags, back_populates="models", order_by="Tag.name"
    )


# The orders a page of models is listed in (modelvault.catalog.browse.SORTS), each an index the
# ORDER BY walks as it is: a page deep in a big catalog is read from it, not sorted.
Index("ix_models_name_order", func.lower(Model.name), Model.name, Model.path)
Index("ix_models_type_order", Model.type, func.lower(Model.name), Model.path)
Index("ix_models_added_order", Model.created_at.desc(), func.lower(Model.name), Model.path)
# A page of one base model in name order, and its count (the page's base filter).
Index(
    "ix_models_base_order", func.lower(Model.base), func.lower(Model.name), Model.name, Model.path
)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    color: Mapped[str | None] = mapped_column(String(7))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    models: Mapped[list[Model]] = relationship(secondary=model_tags, back_populates="tags")


class PendingImport(Base):
    """A legacy row waiting for its file to be hashed: the staging table and work queue."""

    __tablename__ = "pending_import"
    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
        Index(None, "status", "not_before"),
        # Workers claim the oldest claimable rows: without this, PostgreSQL scans
        # the primary key past every row in a final status on each claim.
        Index(None, "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(PathText, unique=True)
    name: Mapped[str] = mapped_column(String(512))
    type: Mapped[str] = mapped_column(String(64), default="other", server_default="other")
    base: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    tags: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")
    legacy_id: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(PathText)
    status: Mapped[str] = mapped_column(
        String(16), default=PendingStatus.PENDING.value, server_default=PendingStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime | None] = mapped_column()
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    sha256: Mapped[str | None] = mapped_column(String(64))
    # Not unique: two legacy rows may name one file in two spellings; the worker
    # settles each against the model of that file.
    path_key: Mapped[str | None] = mapped_column(KeyText, default=key_of_path, index=True)


class DeletedRecord(Base):
    """What a deletion took out of the catalog, kept so it can be seen and restored.

    ``kind`` is ``model`` (a model with its tags and colours, as
    ``ModelRecord.to_dict`` gives it) or ``queued`` (a staging row with its
    tags and notes). Nothing reads these rows but the user: no foreign keys.
    """

    __tablename__ = "deleted_records"
    __table_args__ = (
        CheckConstraint("kind IN ('model', 'queued')", name="kind"),
        Index(None, "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(PathText)
    name: Mapped[str] = mapped_column(String(512))
    deleted_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    record: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


@event.listens_for(Model.path, "set", propagate=True)
@event.listens_for(PendingImport.path, "set", propagate=True)
def _path_set(target: Model | PendingImport, value: str, old: object, initiator: object) -> None:
    """A path given or changed through the ORM takes its key with it."""
    target.path_key = stored_key(value)
