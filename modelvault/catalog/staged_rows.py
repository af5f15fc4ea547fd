"""Staging rows as curation changes them: which may be forgotten (never one a worker
holds), and a tag renamed or dropped in the tags the others carry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Text, cast, select, update
from sqlalchemy.orm import Session

from modelvault.catalog.tags import TagSpec
from modelvault.db.batches import chunked
from modelvault.db.models import PendingImport, PendingStatus
from modelvault.errors import NotFoundError, ValidationError
from modelvault.queue.states import CLAIMED


def retag_queue(session: Session, old: str, new: str | None) -> int:
    """Staging rows carrying the tag ``old`` carry ``new`` instead (None: drop it).

    A row a worker holds (``claimed``) is left alone: the worker catalogues it
    with the tags it read when it claimed it. Returns how many rows changed.
    """
    rows = session.execute(
        select(PendingImport.id, PendingImport.tags)
        .where(PendingImport.status != CLAIMED, cast(PendingImport.tags, Text) != "[]")
        .execution_options(yield_per=500)
    )
    changed = [(row_id, tags) for row_id, stored in rows if (tags := _retag(stored, old, new))]
    for row_id, tags in changed:
        session.execute(update(PendingImport).where(PendingImport.id == row_id).values(tags=tags))
    return len(changed)


def _retag(tags: object, old: str, new: str | None) -> list[Any] | None:
    """``tags`` (a staging row's) with ``old`` renamed or dropped; None if it has no ``old``."""
    if not isinstance(tags, list):
        return None
    kept: list[Any] = []
    found = False
    for entry in tags:
        try:
            spec = TagSpec.parse(entry)
        except ValidationError:  # what the import could not read stays for a person to see
            spec = None
        if spec is None or spec.name != old:
            kept.append(entry)
            continue
        found = True
        if new is not None and all(_name_of(e) != new for e in kept):
            kept.append({"name": new, "color": spec.color})
    return kept if found else None


def _name_of(entry: object) -> str | None:
    try:
        return TagSpec.parse(entry).name
    except ValidationError:
        return None


def forgettable_rows(
    session: Session, ids: list[int], statuses: list[str], *, lock: bool
) -> list[PendingImport]:
    rows = _rows(session, ids, statuses, lock=lock)
    missing = sorted(set(ids) - {row.id for row in rows})
    if missing:
        raise NotFoundError(
            f"no staging row has the id {', '.join(map(str, missing))}: "
            "see the ids with `modelvault pending`."
        )
    held = [row for row in rows if row.status == CLAIMED]
    if held:
        raise ValidationError(
            f"{held[0].path} is being hashed by {held[0].claimed_by}: wait until it is "
            "done, or stop that worker, then forget it."
        )
    return rows


def staging_row_ids(ids: Iterable[int]) -> list[int]:
    wanted = list(dict.fromkeys(ids))
    for row_id in wanted:
        if isinstance(row_id, bool) or not isinstance(row_id, int) or row_id < 1:
            raise ValidationError(f"{row_id!r} is not a staging row id: give whole numbers >= 1.")
    return wanted


def forgettable_statuses(statuses: Iterable[str]) -> list[str]:
    names = [statuses] if isinstance(statuses, str) else list(dict.fromkeys(statuses))
    valid = [s.value for s in PendingStatus if s.value != CLAIMED]
    for name in names:
        if name not in valid:
            raise ValidationError(
                f"{name!r} is not a status rows can be forgotten in: use {', '.join(valid)} "
                "(claimed rows are being hashed)."
            )
    return names


def _rows(
    session: Session, ids: list[int], statuses: list[str], *, lock: bool
) -> list[PendingImport]:
    """The staging rows with these ids or statuses, by id (locked: for deleting them)."""
    queries = [PendingImport.id.in_(chunk) for chunk in chunked(ids)]
    if statuses:
        queries.append(PendingImport.status.in_(statuses))
    rows: dict[int, PendingImport] = {}
    for where in queries:
        query = select(PendingImport).where(where)
        rows.update(
            (row.id, row) for row in session.scalars(query.with_for_update() if lock else query)
        )
    return sorted(rows.values(), key=lambda row: row.id)
