"""Two records of one content made one: fields by a conflict policy, notes kept
whole (what gives way goes to ``superseded``), previews united."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelvault.catalog.stamp_meta import with_file_stat
from modelvault.catalog.values import LEGACY, PREVIEWS, PREVIOUS_PATHS, SUPERSEDED
from modelvault.db.models import Model

if TYPE_CHECKING:
    from modelvault.catalog.settle import HashedFile


def combine_fields(model: Model, item: HashedFile, policy: str) -> None:
    """Apply a conflict policy to a model that meets another record of its content.

    ``merge`` fills what the model lacks, ``keep`` changes no field, ``replace``
    overwrites. Notes are never lost: a ``meta`` value that gives way to the
    other side's (the incoming one under merge and keep, the model's own under
    replace) is kept in ``meta["superseded"]`` with the path it came from.
    Preview lists (``meta["previews"]``) are united under every policy: an image
    is never dropped.
    """
    replace = policy == "replace"
    took_mtime = False
    if policy != "keep":
        for key in ("name", "type", "base", "size_bytes", "mtime_ns"):
            new = getattr(item, key)
            old = getattr(model, key)
            if new is not None and (replace or old is None or (key == "type" and old == "other")):
                setattr(model, key, new)
                took_mtime = took_mtime or key == "mtime_ns"
    model.meta = combine_meta(dict(model.meta), model.path, dict(item.meta), item.path, policy)
    if took_mtime:  # the stamp goes with the mtime it was taken with
        model.meta = with_file_stat(model.meta, item.file_stat)


def combine_meta(
    ours: dict[str, Any], our_path: str, theirs: dict[str, Any], their_path: str, policy: str
) -> dict[str, Any]:
    """Both sides' notes in one ``meta``; the values that give way go to ``superseded``."""
    superseded = list(ours.pop(SUPERSEDED, []))
    theirs = {k: v for k, v in theirs.items() if k not in (SUPERSEDED, PREVIOUS_PATHS)}
    previews = _united_previews(ours, theirs)
    if LEGACY not in ours and LEGACY in theirs:
        # Where a model came from is bookkeeping, not a user's field: it is taken
        # under every policy, so a later import recognises the row it came from.
        ours[LEGACY] = theirs.pop(LEGACY)
    if policy == "replace":
        combined = {**ours, **theirs}
        lost = {k: v for k, v in ours.items() if k in theirs and theirs[k] != v}
        lost_path = our_path
    elif policy == "merge":
        combined = {**theirs, **ours}
        lost = {k: v for k, v in theirs.items() if k in ours and ours[k] != v}
        lost_path = their_path
    else:  # keep: the model's notes stay exactly as they are
        combined = dict(ours)
        lost = {k: v for k, v in theirs.items() if k not in ours or ours[k] != v}
        lost_path = their_path
    entry = {"path": lost_path, "meta": lost}
    if lost and entry not in superseded:
        superseded.append(entry)
    if superseded:
        combined[SUPERSEDED] = superseded
    if previews is not None:
        combined[PREVIEWS] = previews
    return combined


def unite_previews(model: Model, meta: Mapping[str, Any]) -> None:
    """Add the previews of another record of the model's content to the model's."""
    previews = _united_previews(dict(model.meta), dict(meta))
    if previews is not None and previews != model.meta.get(PREVIEWS):
        model.meta = {**model.meta, PREVIEWS: previews}


def _united_previews(ours: dict[str, Any], theirs: dict[str, Any]) -> list[Any] | None:
    """Both preview lists in one, ours first, each entry once; both sides lose the
    key so the policy never weighs it. None (keys left alone) unless every side
    that has one holds a list."""
    lists = [side[PREVIEWS] for side in (ours, theirs) if PREVIEWS in side]
    if not lists or not all(isinstance(value, list) for value in lists):
        return None
    ours.pop(PREVIEWS, None)
    theirs.pop(PREVIEWS, None)
    united: list[Any] = []
    for entry in (entry for value in lists for entry in value):
        if entry not in united:
            united.append(entry)
    return united
