"""A hashed file settled into the catalog inside a caller's transaction.

These functions take an open ``Session`` and never commit: the caller owns the
transaction, so the CRUD facade, the importer and the worker can combine them
into one atomic unit (upsert the model, get-or-create its tags, link them,
delete the staging row).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from modelvault.catalog.combine import combine_fields, unite_previews
from modelvault.catalog.stamp_meta import (
    SCAN_MTIME_NS,
    SCAN_SOURCE,
    staged_file_stat,
    with_file_stat,
    without_scan_stat,
)
from modelvault.catalog.tags import TagSpec, ensure_tags, link_tags
from modelvault.catalog.values import PREVIOUS_PATHS, PREVIOUS_SHA256, file_name
from modelvault.db.keyed import same_file
from modelvault.db.models import Model, PendingImport
from modelvault.db.types import utcnow
from modelvault.file_stamp import FILE_STAT
from modelvault.identify.catalog import FoundFields, apply_found
from modelvault.pathkey import renamed_below, stored_key
from modelvault.queue.states import DUPLICATE


class Outcome(str, enum.Enum):
    """What became of a hashed file offered to the catalog."""

    IMPORTED = "imported"  # a new model
    MERGED = "merged"  # the same content at the same path was catalogued already
    MOVED = "moved"  # the catalogued copy is gone: the model now points here
    REPLACED = "replaced"  # a scanned file holds new content: its model follows it
    DUPLICATE = "duplicate"  # the same content lives on at another path
    CONFLICT = "conflict"  # the path is catalogued with other content

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class HashedFile:
    """A file whose content hash is known, with everything the user attached to it."""

    sha256: str
    path: str
    name: str
    type: str = "other"
    base: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    created_at: datetime | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[TagSpec] = ()
    source: str | None = None  # ``SCAN_SOURCE`` for a file a folder scan found
    # The rest of the file's stamp, kept with mtime_ns (``meta["file_stat"]``).
    file_stat: Mapping[str, int] | None = None
    # What the file's header said as it was hashed (modelvault.identify.catalog).
    found: Mapping[str, Any] | None = None

    @property
    def scanned(self) -> bool:
        return self.source == SCAN_SOURCE


@dataclass(frozen=True)
class Settled:
    outcome: Outcome
    reason: str | None = None


def settle_file(
    session: Session,
    item: HashedFile,
    *,
    policy: str = "merge",
    path_is_live: Callable[[str], bool] | None = None,
    tag_cache: dict[str, int] | None = None,
) -> Settled:
    """Put a hashed file into the catalog, or say why it cannot go there.

    - new content at a free path: a new model with its tags;
    - content catalogued at this same path: fields combined by ``policy``
      (``merge`` fills empty fields, ``keep`` changes nothing, ``replace``
      overwrites), tags always united: a tag is never dropped;
    - content catalogued at another path: if ``path_is_live`` says that copy is
      gone, the model moves here (policy applied as above; a model named after
      its file takes the new file's name); otherwise this is a
      ``DUPLICATE`` and its tags and previews are merged into the model;
    - the path catalogued with other content: ``CONFLICT``, nothing written;
      unless a folder scan found the file (``item.scanned``): then the file was
      overwritten in place and the model follows its new content
      (``replace_content``).

    A scanned file's stamp (size, mtime, ``file_stat``) is a fact about the
    file, not a note: it is always taken, so the next scan finds the file
    unchanged; and so is its path as the scan spelt it (a file whose name
    changed case only is the same file: ``MOVED`` when a name changed case,
    else ``MERGED``). Wherever a model takes a file's mtime, it takes its
    ``file_stat`` with it.

    Paths are compared by their identity key (``modelvault.pathkey``): on
    Windows, two spellings of one file are one path.

    DUPLICATE and CONFLICT leave the staging row to the caller.
    """
    holder = session.scalar(_locked(select(Model).where(same_file(Model, item.path))))
    if holder is not None and holder.sha256 != item.sha256:
        return _other_content_at_path(session, holder, item, path_is_live, tag_cache)
    model = holder or session.scalar(_locked(select(Model).where(Model.sha256 == item.sha256)))
    if model is None:
        model, outcome = _new_model(session, item), Outcome.IMPORTED
    else:
        outcome = _meet(model, item, policy, same_path=model is holder, path_is_live=path_is_live)
    if item.scanned and outcome is not Outcome.DUPLICATE:
        _take_stamp(model, item)
    if item.found is not None:  # the same content: what its header says holds for the model
        apply_found(model, item.found)
    session.flush()
    _link_item_tags(session, item, tag_cache)
    if outcome is Outcome.DUPLICATE:
        return Settled(outcome, f"same content as {model.path}")
    return Settled(outcome)


def _other_content_at_path(
    session: Session,
    holder: Model,
    item: HashedFile,
    path_is_live: Callable[[str], bool] | None,
    tag_cache: dict[str, int] | None,
) -> Settled:
    """The item's path is catalogued with other content: the model follows a scanned
    file's new content (``replace_content``); anything else is a ``CONFLICT``."""
    if item.scanned:
        settled = replace_content(session, holder, item, path_is_live)
        if settled.outcome is Outcome.REPLACED:
            _link_item_tags(session, item, tag_cache)
        return settled
    return Settled(
        Outcome.CONFLICT,
        f"{item.path} is catalogued with sha256 {holder.sha256}, but its content "
        f"now hashes to {item.sha256}",
    )


def _new_model(session: Session, item: HashedFile) -> Model:
    model = Model(
        sha256=item.sha256,
        path=item.path,
        name=item.name,
        type=item.type,
        base=item.base,
        size_bytes=item.size_bytes,
        mtime_ns=item.mtime_ns,
        meta=with_file_stat(item.meta, item.file_stat),
    )
    if item.created_at is not None:
        model.created_at = item.created_at
    session.add(model)
    return model


def _meet(
    model: Model,
    item: HashedFile,
    policy: str,
    *,
    same_path: bool,
    path_is_live: Callable[[str], bool] | None,
) -> Outcome:
    """The item meets the model of its content: combined with it, moved to the item's
    path, or a ``DUPLICATE`` whose previews join the model."""
    if same_path:  # the file of this path, however spelt
        combine_fields(model, item, policy)
        if item.scanned and model.path != item.path:
            renamed = renamed_below(model.path, item.path)
            move_model(model, item.path, item.name, keep_previous=renamed)
            return Outcome.MOVED if renamed else Outcome.MERGED
        return Outcome.MERGED
    if path_is_live is not None and not path_is_live(model.path):
        combine_fields(model, item, policy)  # first: notes that give way keep their own path
        move_model(model, item.path, item.name)
        return Outcome.MOVED
    unite_previews(model, item.meta)  # like tags: images of the content join the model
    return Outcome.DUPLICATE


def _locked(query: Select[Any]) -> Select[Any]:
    """The model row locked until the transaction ends (PostgreSQL; SQLite's write lock
    is held from BEGIN), read afresh: the model is read, combined and written back,
    and a note a person wrote meanwhile (``modelvault.catalog.curation``) must not be lost."""
    return query.with_for_update().execution_options(populate_existing=True)


def move_model(model: Model, path: str, name: str, *, keep_previous: bool = True) -> None:
    """The model's file is now at ``path`` (its old path goes to ``meta.previous_paths``
    unless ``keep_previous`` is False: the same path, spelt another way). A model
    named after its file takes the new file's ``name``; a name the user gave stays."""
    previous = model.path
    if model.name == file_name(previous):
        model.name = name
    model.path = path  # and its key (db.models: the ORM keeps the two together)
    if keep_previous:
        model.meta = {
            **model.meta,
            PREVIOUS_PATHS: [*model.meta.get(PREVIOUS_PATHS, []), previous],
        }


def _take_stamp(model: Model, item: HashedFile) -> None:
    """The model records the item's file as it was hashed: size, mtime, ``file_stat``."""
    model.size_bytes, model.mtime_ns = item.size_bytes, item.mtime_ns
    if model.meta.get(FILE_STAT) != item.file_stat:
        model.meta = with_file_stat(model.meta, item.file_stat)


def _link_item_tags(session: Session, item: HashedFile, tag_cache: dict[str, int] | None) -> None:
    if item.tags:
        ids = ensure_tags(session, item.tags, tag_cache)
        link_tags(session, ((item.sha256, tag_id) for tag_id in ids.values()))


def replace_content(
    session: Session,
    holder: Model,
    item: HashedFile,
    path_is_live: Callable[[str], bool] | None,
) -> Settled:
    """A scanned file at a catalogued path now holds other content (a re-download).

    The model at the path takes the new sha256 and keeps its tags and notes;
    the old sha256 goes to ``meta["previous_sha256"]``. If a copy of the old
    content was found at another live path (a staging row marked
    ``duplicate`` of it), that path becomes the model of the old content.
    New content that is catalogued already at another path is a ``CONFLICT``:
    two models cannot share one content, and which one the user meant is theirs
    to say.
    """
    other = session.get(Model, item.sha256)
    if other is not None:
        return Settled(
            Outcome.CONFLICT,
            f"{item.path} was overwritten with the content catalogued at {other.path} "
            f"(sha256 {item.sha256}): delete one of the two files or models",
        )
    old_sha = holder.sha256
    meta = with_file_stat(holder.meta, item.file_stat)
    meta[PREVIOUS_SHA256] = [*meta.get(PREVIOUS_SHA256, []), old_sha]
    fields = FoundFields(holder.base, holder.type, meta)
    if item.found is not None:  # what the old content's header said goes with it
        apply_found(fields, item.found, new_content=True)
    copy = _live_copy(session, old_sha, path_is_live)
    session.expunge(holder)  # its primary key changes below, behind the ORM's back
    # ON UPDATE CASCADE carries the model's tag links to the new key.
    session.execute(
        update(Model)
        .where(Model.sha256 == old_sha)
        .values(
            sha256=item.sha256,
            path=item.path,  # as the scan spelt it (the same key)
            path_key=stored_key(item.path),
            size_bytes=item.size_bytes,
            mtime_ns=item.mtime_ns,
            base=fields.base,
            meta=fields.meta,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if copy is not None:
        _copy_takes_old_content(session, copy, old_sha)
    session.flush()
    return Settled(Outcome.REPLACED)


def _copy_takes_old_content(session: Session, copy: PendingImport, old_sha: str) -> None:
    """The staging row of a live copy of the old content becomes its model."""
    meta = copy.meta or {}
    session.add(
        Model(
            sha256=old_sha,
            path=copy.path,
            name=copy.name,
            type=copy.type,
            base=copy.base,
            size_bytes=copy.size_bytes,
            mtime_ns=meta.get(SCAN_MTIME_NS),
            meta=with_file_stat(without_scan_stat(meta), staged_file_stat(meta)),
        )
    )
    session.delete(copy)


def _live_copy(
    session: Session, sha256: str, path_is_live: Callable[[str], bool] | None
) -> PendingImport | None:
    """A staging row found to hold ``sha256`` at another path that still exists."""
    rows = session.scalars(
        select(PendingImport)
        .where(
            PendingImport.sha256 == sha256,
            PendingImport.status == DUPLICATE,
        )
        .order_by(PendingImport.id)
    )
    for row in rows:
        if path_is_live is None or path_is_live(row.path):
            return row
    return None
