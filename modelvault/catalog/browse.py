"""Listing and finding models: the filters and orders they are listed in, the look at
each file that ``--missing`` and ``--unreachable`` take, and a model named by a
hash, a path or a name. Each function is one transaction on a ``DatabaseManager``
(its public methods of the same names)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from modelvault.catalog.crud import get_model_by_path, model_query
from modelvault.catalog.records import ModelRecord
from modelvault.db.engine import no_idle_limit
from modelvault.db.keyed import keys_under
from modelvault.db.models import Model, Tag, model_tags
from modelvault.errors import NotFoundError, ValidationError
from modelvault.identify.catalog import AUTOV3
from modelvault.identify.hashes import AUTOV2_LENGTH
from modelvault.normalize import normalize_tag_name
from modelvault.pathkey import absolute
from modelvault.presence import FileState, check_file

if TYPE_CHECKING:
    from modelvault.database import DatabaseManager

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


@dataclass(frozen=True)
class ModelFilter:
    """Which models a listing keeps: those carrying every tag in ``tags`` (with
    ``untagged``: no tag at all), of ``model_type``, of the base model ``base`` (any
    case), with ``search`` in their name or path (any case), under one of the folders
    ``under`` (in any spelling of it: ``modelvault.pathkey``); with ``missing`` only
    those whose file is gone, with ``unreachable`` only those whose file cannot be
    looked at now (see ``modelvault.presence``), with both either."""

    tags: Iterable[str] = ()
    model_type: str | None = None
    search: str | None = None
    under: Iterable[str | os.PathLike[str]] = ()
    untagged: bool = False
    base: str | None = None
    missing: bool = False
    unreachable: bool = False

    def file_states(self) -> set[FileState]:
        """The states of the file a model must be in to be kept (none: no look at files)."""
        pairs = ((FileState.GONE, self.missing), (FileState.UNREACHABLE, self.unreachable))
        return {state for state, on in pairs if on}


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


_HEX_PREFIX = re.compile(r"[0-9a-fA-F]{4,64}")


def find_models(
    db: DatabaseManager,
    filters: ModelFilter,
    *,
    limit: int | None = None,
    offset: int = 0,
    sort: str = "name",
) -> list[ModelRecord]:
    """The models ``filters`` keeps in the order ``sort`` says, one page of them
    (``offset``, ``limit``): by ``name`` (any case), ``size`` (biggest first),
    ``added`` (newest first), ``type`` or ``path``; names then paths break ties.
    Two queries per page, however many tags the models have.
    """
    where = _model_filters(filters)
    wanted, order = filters.file_states(), sort_order(sort)
    with db.session_scope() as session:
        if not wanted:
            query = model_query().where(*where).order_by(*order)
            return [ModelRecord.of(m) for m in session.scalars(query.offset(offset).limit(limit))]
        found = with_file_state(session, where, wanted, order)
        page = list(itertools.islice(found, offset, None if limit is None else offset + limit))
        if not page:
            return []
        query = model_query().where(Model.sha256.in_(page)).order_by(*order)
        return [ModelRecord.of(m) for m in session.scalars(query)]


def count_models(db: DatabaseManager, filters: ModelFilter) -> int:
    """How many models ``find_models`` lists with these filters and no limit."""
    where = _model_filters(filters)
    wanted = filters.file_states()
    with db.session_scope() as session:
        if not wanted:
            return session.scalar(select(func.count()).select_from(Model).where(*where)) or 0
        return sum(1 for _ in with_file_state(session, where, wanted, [Model.sha256]))


def find_model(db: DatabaseManager, key: str) -> ModelRecord:
    """The model named by a SHA-256, a unique prefix of one (4+ hex digits, any
    case: Civitai's AutoV2 is the first 10), its AutoV3 or the start of it (10+
    digits: A1111 writes 12), its path, or its file name when only one model has it.

    ``NotFoundError`` when nothing matches, ``ValidationError`` when a
    prefix or name matches several models.
    """
    text_key = key.strip()
    if _HEX_PREFIX.fullmatch(text_key):
        found = _find_by_hash(db, text_key)
        if found is not None:
            return found
    for path in dict.fromkeys([text_key, str(Path(text_key).expanduser().absolute())]):
        model = get_model_by_path(db, path)
        if model is not None:
            return model
    with db.session_scope() as session:
        named = list(session.scalars(model_query().where(Model.name == text_key).limit(2)))
    if len(named) > 1:
        raise ValidationError(
            f"several models are named {text_key!r}: give a path or a SHA-256 instead."
        )
    if named:
        return ModelRecord.of(named[0])
    raise NotFoundError(
        f"no model in the catalog has the SHA-256, path or name {text_key!r}: "
        "list them with `modelvault models`."
    )


def _find_by_hash(db: DatabaseManager, digits: str) -> ModelRecord | None:
    """The model whose SHA-256 (else AutoV3) starts with ``digits``; None if none."""
    prefix = digits.lower()
    # A range on the key, not LIKE: its index serves it under any collation.
    by_sha = and_(Model.sha256 >= prefix, Model.sha256 < prefix + "g")
    with db.session_scope() as session:
        matches = list(session.scalars(model_query().where(by_sha).limit(2)))
        what = "SHA-256"
        if not matches and len(prefix) >= AUTOV2_LENGTH:
            autov3 = Model.meta[AUTOV3].as_string()
            by_autov3 = and_(autov3 >= prefix, autov3 < prefix + "g")
            matches = list(session.scalars(model_query().where(by_autov3).limit(2)))
            what = "AutoV3"
    if len(matches) > 1:
        raise ValidationError(f"{digits} is the start of several models' {what}: give more digits.")
    return ModelRecord.of(matches[0]) if matches else None


def _model_filters(filters: ModelFilter) -> list[Any]:
    """The conditions of ``filters`` on the models' columns and tags."""
    tags, model_type, search = filters.tags, filters.model_type, filters.search
    under, untagged, base = filters.under, filters.untagged, filters.base
    where: list[Any] = []
    if base:
        where.append(func.lower(Model.base) == base.strip().lower())
    if untagged:
        where.append(Model.sha256.not_in(select(model_tags.c.model_sha256)))
    for name in tags:
        tagged = (
            select(model_tags.c.model_sha256)
            .join(Tag, Tag.id == model_tags.c.tag_id)
            .where(Tag.name == normalize_tag_name(name))
        )
        where.append(Model.sha256.in_(tagged))
    if model_type:
        where.append(Model.type == model_type)
    if search:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search.lower()) + "%"
        where.append(
            or_(
                func.lower(Model.name).like(pattern, escape="\\"),
                func.lower(Model.path).like(pattern, escape="\\"),
            )
        )
    folders = [absolute(os.fspath(f)) for f in under]
    if folders:
        where.append(or_(*(keys_under(Model, folder) for folder in folders)))
    return where
