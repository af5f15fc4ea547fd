"""Listing models: the orders they can be listed in, and the look at each file that
``--missing`` and ``--unreachable`` take (see ``DatabaseManager.find_models``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelvault.db.engine import no_idle_limit
from modelvault.db.models import Model
from modelvault.errors import ValidationError
from modelvault.presence import FileState, check_file

# Rows read at a time while looking for models whose file is gone.
MISSING_SCAN_PAGE = 500

SORTS = {
    "name": (func.lower(Model.name), Model.name, Model.path),
    "size": (Model.size_bytes.desc().nulls_last(), func.lower(Model.name), Model.path),
    "added": (Model.created_at.desc(), func.lower(Model.name), Model.path),
    "type": (Model.type, func.lower(Model.name), Model.path),
    "path": (Model.path,),
}


def sort_order(sort: str) -> tuple[Any, ...]:
    if sort not in SORTS:
        raise ValidationError(f"{sort!r} is not an order of models: use {', '.join(SORTS)}.")
    return SORTS[sort]


def file_states(missing: bool, unreachable: bool) -> set[FileState]:
    return {s for s, on in ((FileState.GONE, missing), (FileState.UNREACHABLE, unreachable)) if on}


def with_file_state(
    session: Session, where: list[Any], wanted: set[FileState], order: Sequence[Any]
) -> Iterator[str]:
    """The SHA-256 of each matching model whose file is in a ``wanted`` state. What
    became of a file is only known on disk: the paths are streamed once (and the
    files looked at between reads, so the read may idle in its transaction)."""
    no_idle_limit(session.connection())
    paths = (
        select(Model.sha256, Model.path)
        .where(*where)
        .order_by(*order)
        .execution_options(yield_per=MISSING_SCAN_PAGE)
    )
    with session.execute(paths) as rows:
        yield from (sha for sha, path in rows if check_file(path).state in wanted)
