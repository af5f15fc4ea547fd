"""What an import did: ``ImportReport`` (docs/ARCHITECTURE.md, "Stage 1", explains its counts)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from modelvault.legacy.images import ImageReport

log = logging.getLogger("modelvault.migration.importer")

MAX_WARNINGS = 1000
# Where a legacy row can go: each is a count of the report, and they add up to rows_read.
OUTCOMES = (
    *("imported", "merged", "moved", "staged"),
    *("duplicates", "conflicts", "already_present", "failed"),
)


@dataclass
class ImportReport:
    """What an import did; ``to_dict()`` is fit for ``json.dumps``.

    ``rows_read == imported + merged + moved + staged + duplicates + conflicts
    + already_present + failed`` (see ``accounted``), on every run, first or not.
    """

    legacy_path: str
    layout: int | None = None
    rows_read: int = 0
    imported: int = 0  # new models
    merged: int = 0  # combined into a model the user had catalogued at the same path
    moved: int = 0  # the model of its content had a dead path: it now points at this row's file
    staged: int = 0  # pending_import rows waiting for the worker
    duplicates: int = 0  # pending_import rows "duplicate" (content catalogued elsewhere)
    conflicts: int = 0  # pending_import rows "conflict" (path catalogued with other content)
    already_present: int = 0  # put in place by an earlier run (or the worker since)
    failed: int = 0  # pending_import rows "failed": their path cannot be used (relative)
    tags_created: int = 0
    orphan_links_skipped: int = 0
    unreadable_colors: list[dict[str, Any]] = field(default_factory=list)
    color_clashes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    warnings_omitted: int = 0
    images: ImageReport | None = None  # the preview images (modelvault.legacy.images)
    seconds: float = 0.0

    @property
    def accounted(self) -> int:
        """Rows that reached a place; equals ``rows_read`` once the import is done."""
        return sum(getattr(self, outcome) for outcome in OUTCOMES)

    def warn(self, table: str, legacy_id: Any, reason: str) -> None:
        log.debug("legacy %s %s: %s", table, legacy_id, reason)
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append({"table": table, "legacy_id": legacy_id, "reason": reason})
        else:
            self.warnings_omitted += 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["MAX_WARNINGS", "OUTCOMES", "ImportReport"]
