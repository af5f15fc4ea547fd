"""Where a legacy row goes: one pure function of the row and of what the catalog holds.

``place(row, held, source)`` reads no database and no file: the importer looks
up, for a whole batch at once, what the catalog holds at each row's path and for
each row's hash (``Held``), and writes what ``place`` decides. The rules are in
docs/ARCHITECTURE.md ("Stage 1: the legacy import", "Where a row goes"); a row that
meets a model the user catalogued by other means is ``SETTLE``: the one
definition shared with the worker (``catalog.settle.settle_file``) decides it.
"""

from __future__ import annotations

import enum
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol

from modelvault.catalog.values import LEGACY, PREVIOUS_PATHS, SUPERSEDED
from modelvault.pathkey import path_key


class Place(enum.Enum):
    NEW = "new"  # a new model with its tags (imported)
    STAGE = "stage"  # a staging row "pending": the worker hashes it (staged)
    FAILED = "failed"  # a staging row "failed": its path cannot be used (failed)
    CONFLICT = "conflict"  # a staging row "conflict" at a path of its own (conflicts)
    PRESENT = "present"  # an earlier run put it in place (already_present)
    SETTLE = "settle"  # it meets a catalogued model: catalog.settle.settle_file decides


@dataclass(frozen=True, slots=True)
class Placement:
    place: Place
    warning: str | None = None  # for the report, when the row's notes were not added


@dataclass(frozen=True, slots=True)
class Marks:
    """The legacy provenance a model carries: its ``meta.legacy`` and the
    ``meta.legacy`` of every record that gave way to it (``meta.superseded``)."""

    sources: frozenset[str] = frozenset()  # legacy files its records came from
    rows: frozenset[tuple[str, Any]] = frozenset()  # (source, legacy id) of each
    previous_keys: tuple[str, ...] = ()  # where the model was before it moved (path keys)


NO_MARKS = Marks()


@dataclass(frozen=True, slots=True)
class Held:
    """What the catalog holds for one row's path and hash."""

    staged: bool = False  # a staging row has the row's path (any status)
    staged_source: str | None = None  # ...and came from this legacy file
    at_path: Marks | None = None  # a model has the row's path, in any spelling (its marks)
    at_other_spelling: bool = False  # ...spelt otherwise (on Windows: the same file)
    of_hash: Marks | None = None  # a model has the row's content (its marks)
    new_in_batch: bool = False  # an earlier row of the batch is a new model of this content


NOTHING_HELD = Held()
# The placements without a warning, made once: ``place`` runs for every row.
_PLAIN = {where: Placement(where) for where in Place}


class PlacedRow(Protocol):
    """What ``place`` reads of a legacy row in v3 form."""

    @property
    def legacy_id(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def key(self) -> str: ...  # its path's identity key (modelvault.pathkey)
    @property
    def sha256(self) -> str | None: ...  # None: the legacy hash does not count
    @property
    def unusable_path(self) -> str | None: ...  # why its path cannot be used
    @property
    def path_clash(self) -> str | None: ...  # why it is a conflict at a path of its own


def place(row: PlacedRow, held: Held, source: str) -> Placement:
    """Where ``row``, read from the legacy file ``source``, goes in the catalog."""
    if held.staged:
        return _already(
            row, frozenset() if held.staged_source is None else {held.staged_source}, source
        )
    if row.unusable_path is not None:
        return _PLAIN[Place.FAILED]
    if row.path_clash is not None:
        return _PLAIN[Place.CONFLICT]
    if held.at_path is not None:
        # A model at this very path that a legacy import put there is this row's
        # (legacy paths are unique); at another spelling of it, only if it holds this row.
        if held.at_path.sources and (
            not held.at_other_spelling or (source, row.legacy_id) in held.at_path.rows
        ):
            return _already(row, held.at_path.sources, source)
        return _PLAIN[Place.STAGE if row.sha256 is None else Place.SETTLE]
    if row.sha256 is None:
        return _PLAIN[Place.STAGE]
    if held.new_in_batch:
        return _PLAIN[Place.SETTLE]
    if held.of_hash is None:
        return _PLAIN[Place.NEW]
    if row.key in held.of_hash.previous_keys and (source, row.legacy_id) in held.of_hash.rows:
        return _PLAIN[Place.PRESENT]  # the model moved away from this row's path since
    return _PLAIN[Place.SETTLE]


def _already(row: PlacedRow, sources: AbstractSet[str], source: str) -> Placement:
    if not sources or source in sources:
        return _PLAIN[Place.PRESENT]
    return Placement(
        Place.PRESENT,
        f"{row.path} was imported already from {', '.join(sorted(sources))}; "
        "this row's tags and notes were not added",
    )


def marks_of(meta: Any) -> Marks:
    """The legacy rows a catalogued model holds: its own ``meta.legacy`` and those
    of the records that gave way to it (``meta.superseded[*].meta.legacy``), which
    is where a row merged into a model that had one already keeps its provenance."""
    if not isinstance(meta, dict):
        return NO_MARKS
    blocks = [meta.get(LEGACY)]
    superseded = meta.get(SUPERSEDED)
    if isinstance(superseded, list):
        blocks.extend(
            entry["meta"].get(LEGACY)
            for entry in superseded
            if isinstance(entry, dict) and isinstance(entry.get("meta"), dict)
        )
    sources: set[str] = set()
    rows: set[tuple[str, Any]] = set()
    for block in blocks:
        if isinstance(block, dict) and isinstance(source := block.get("source"), str):
            sources.add(source)
            legacy_id = block.get("id")
            if isinstance(legacy_id, int) and not isinstance(legacy_id, bool):
                rows.add((source, legacy_id))
    previous = meta.get(PREVIOUS_PATHS)
    return Marks(
        frozenset(sources),
        frozenset(rows),
        tuple(path_key(p) for p in previous if isinstance(p, str))
        if isinstance(previous, list)
        else (),
    )


__all__ = ["NOTHING_HELD", "Held", "Marks", "Place", "Placement", "marks_of", "place"]
