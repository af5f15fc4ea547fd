"""Tags inside a caller's transaction: get or create them by name, link them to models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from modelvault.db.batches import chunked, insert_ignoring_duplicates
from modelvault.db.models import Tag, model_tags
from modelvault.db.types import utcnow
from modelvault.normalize import normalize_color, normalize_tag_name


@dataclass(frozen=True)
class TagSpec:
    """A tag as something asks for it: a normalised name and an optional colour."""

    name: str
    color: str | None = None

    @classmethod
    def parse(cls, value: object) -> TagSpec:
        """From a name, or a ``{"name": ..., "color": ...}`` mapping (the staging form)."""
        if isinstance(value, Mapping):
            return cls(normalize_tag_name(value.get("name")), normalize_color(value.get("color")))
        return cls(normalize_tag_name(value))

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "color": self.color}


def ensure_tags(
    session: Session, specs: Iterable[TagSpec], cache: dict[str, int] | None = None
) -> dict[str, int]:
    """Get or create each tag by name and return ``{name: id}``.

    A tag that exists keeps its colour unless it has none, in which case it
    takes the one asked for (fill what is empty, never overwrite). ``cache``
    (name -> id) lets a long run skip names it has already seen.
    """
    wanted: dict[str, str | None] = {}
    for spec in specs:
        if wanted.get(spec.name) is None:
            wanted[spec.name] = spec.color
    known = cache if cache is not None else {}
    todo = [name for name in wanted if name not in known]
    for names in chunked(todo):
        now = utcnow()
        insert_ignoring_duplicates(
            session,
            Tag.__table__,  # type: ignore[arg-type]
            [{"name": n, "color": wanted[n], "created_at": now} for n in names],
        )
        rows = session.execute(select(Tag.id, Tag.name, Tag.color).where(Tag.name.in_(names)))
        for tag_id, name, color in rows:
            known[name] = tag_id
            if color is None and wanted[name] is not None:
                session.execute(
                    update(Tag)
                    .where(Tag.id == tag_id, Tag.color.is_(None))
                    .values(color=wanted[name])
                )
    return {name: known[name] for name in wanted}


def link_tags(session: Session, pairs: Iterable[tuple[str, int]]) -> None:
    """Link (model sha256, tag id) pairs; links that exist already are kept as they are."""
    rows = [{"model_sha256": sha, "tag_id": tag_id} for sha, tag_id in dict.fromkeys(pairs)]
    for chunk in chunked(rows):
        insert_ignoring_duplicates(session, model_tags, list(chunk))
