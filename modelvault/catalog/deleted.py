"""What a deletion keeps: each deleted model or staging row, whole, in ``deleted_records``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelvault.catalog.records import ModelRecord, PendingRecord
from modelvault.db.models import DeletedRecord


@dataclass(frozen=True)
class DeletedEntry:
    """A row of ``deleted_records``: what was deleted, when, and the whole record."""

    id: int
    kind: str  # "model" or "queued"
    sha256: str | None
    path: str
    name: str
    deleted_at: datetime
    record: dict[str, Any]

    @classmethod
    def of(cls, row: DeletedRecord) -> DeletedEntry:
        return cls(
            row.id, row.kind, row.sha256, row.path, row.name, row.deleted_at, dict(row.record)
        )


def deleted_row(
    kind: str,
    sha256: str | None,
    path: str,
    name: str,
    record: ModelRecord | PendingRecord,
    when: datetime,
) -> dict[str, Any]:
    data = json.loads(json.dumps(record.to_dict(), default=_json_default))
    return {
        "kind": kind,
        "sha256": sha256,
        "path": path,
        "name": name,
        "deleted_at": when,
        "record": data,
    }


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
