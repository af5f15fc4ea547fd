"""Legacy tags in v3 form: registered in the catalog (names normalised, colours
read), and the tags of each legacy row, with what of them goes in its
``meta.legacy`` (unreadable or clashing colours, unusable names, exact bytes).

Memory stays flat however many tags there are: tags are registered a chunk at a
time, and at most ``cache_size`` of them are kept between batches (a batch looks
up again the ones its links need).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select

from modelvault.catalog.tags import TagSpec, ensure_tags
from modelvault.database import DatabaseManager
from modelvault.db.batches import chunked, insert_ignoring_duplicates
from modelvault.db.models import Tag
from modelvault.db.types import utcnow
from modelvault.errors import ValidationError
from modelvault.legacy.layout import LegacyRow
from modelvault.legacy.reader import LegacyCatalog
from modelvault.legacy.values import from_ms, jsonable, text
from modelvault.migration.report import ImportReport
from modelvault.normalize import normalize_tag_name, read_color

TAGS = cast(Table, Tag.__table__)


@dataclass(slots=True)
class LegacyTag:
    """A legacy tag in v3 form: ``spec`` is None when its name cannot be a v3 tag.

    ``key`` is its name as stored (the key of ``meta.legacy.tag_colors``);
    ``color_clash`` is set when its colour is readable but the v3 tag has another.
    """

    id: Any
    spec: TagSpec | None
    key: str | None
    raw_name: Any
    raw_color: Any
    unreadable_color: bool
    color_clash: bool = False
    color_kept: bool = True  # False: the v3 colour drops what the raw one says (alpha, ...)
    raw_bytes: dict[str, str] | None = None  # {"name"/"color": base64} of bytes values


class LegacyTags:
    """The legacy tags of one import: ``by_id`` (legacy id -> the tag in v3 form)
    and ``ids`` (v3 tag name -> id) hold the ones met lately; what is odd about
    them goes to ``report``."""

    def __init__(
        self,
        legacy: LegacyCatalog,
        db: DatabaseManager,
        report: ImportReport,
        cache_size: int,
    ) -> None:
        self.legacy = legacy
        self.db = db
        self.report = report
        self.source = str(legacy.path)
        self.cache_size = cache_size
        # Caches, emptied when they outgrow cache_size (a legacy file may hold
        # millions of tags): what a batch needs is looked up again.
        self.by_id: dict[Any, LegacyTag] = {}
        self.ids: dict[str, int] = {}
        self.missing: set[Any] = set()  # legacy tag ids that links name but do not exist
        # legacy tag ids of a row -> its tags and what they add to meta.legacy;
        # emptied whenever a tag changes
        self.combos: dict[tuple[Any, ...], tuple[list[TagSpec], dict[str, Any]]] = {}

    def register_all(self, chunk_size: int) -> None:
        """Every legacy tag, used or not, ``chunk_size`` per transaction."""
        for chunk in self.legacy.tag_chunks(chunk_size):
            self._forget(len(chunk))
            self.register(chunk)

    def _forget(self, coming: int) -> None:
        """Empty the tag caches if ``coming`` more would take them past self.cache_size."""
        if len(self.by_id) + coming > self.cache_size:
            self.by_id.clear()
            self.ids.clear()
            self.combos.clear()

    def _resolve(self, needed: set[Any]) -> None:
        """Put the legacy tags ``needed`` by a batch in ``self.by_id`` (their v3 ids in
        ``self.ids``): from the cache, else read again from both files; a tag
        the legacy app added since the tags were registered is registered now."""
        self._forget(len(needed))
        unknown = sorted(needed - self.by_id.keys() - self.missing, key=repr)
        if not unknown:
            return
        self.combos.clear()
        rows = self.legacy.tags(unknown)
        found = {row.id: legacy_tag(row, ImportReport(legacy_path=self.source)) for row in rows}
        names = {tag.spec.name for tag in found.values() if tag.spec is not None}
        in_catalog: dict[str, tuple[int, str | None]] = {}
        with self.db.session_scope() as session:
            for chunk in chunked(sorted(names)):
                query = select(Tag.name, Tag.id, Tag.color).where(Tag.name.in_(chunk))
                in_catalog.update((name, (i, color)) for name, i, color in session.execute(query))
        added_since = []
        for row in rows:
            tag = found[row.id]
            if tag.spec is not None and tag.spec.name not in in_catalog:
                added_since.append(row)
                continue
            if tag.spec is not None:
                tag_id, color = in_catalog[tag.spec.name]
                self.ids[tag.spec.name] = tag_id
                tag.color_clash = tag.spec.color is not None and color != tag.spec.color
            self.by_id[row.id] = tag
        if added_since:
            self.register(added_since)
        self.missing.update(t for t in unknown if t not in self.by_id)

    def register(self, rows: Sequence[Any]) -> None:
        """Normalise legacy tags and get or create them in the catalog (one transaction)."""
        self.combos.clear()
        now = utcnow()
        wanted: dict[str, dict[str, Any]] = {}
        registered: list[LegacyTag] = []
        for row in rows:
            tag = legacy_tag(row, self.report)
            self.by_id[row.id] = tag
            registered.append(tag)
            if tag.spec is not None and tag.spec.name not in wanted:
                created = from_ms(row.created_at) or now
                wanted[tag.spec.name] = {
                    "name": tag.spec.name,
                    "color": tag.spec.color,
                    "created_at": created,
                }
            elif tag.spec is not None and wanted[tag.spec.name]["color"] is None:
                wanted[tag.spec.name]["color"] = tag.spec.color
        if not wanted:
            return
        specs = [TagSpec(v["name"], v["color"]) for v in wanted.values()]
        with self.db.session_scope(immediate=True) as session:
            existing: set[str] = set()
            for names in chunked(list(wanted)):
                existing.update(session.scalars(select(Tag.name).where(Tag.name.in_(names))))
            # Insert first so new tags keep their legacy created_at; ensure_tags then
            # fills an empty colour of a tag that existed, and gives us the ids.
            insert_ignoring_duplicates(
                session, TAGS, [v for n, v in wanted.items() if n not in existing]
            )
            ids = ensure_tags(session, specs)
            colors: dict[str, str | None] = {}
            for names in chunked(list(wanted)):
                query = select(Tag.name, Tag.color).where(Tag.name.in_(names))
                colors.update((name, color) for name, color in session.execute(query))
        self.ids.update(ids)
        self.report.tags_created += len(wanted.keys() - existing)
        for tag in registered:
            if tag.spec is not None and tag.spec.color is not None:
                kept = colors.get(tag.spec.name)
                if kept != tag.spec.color:
                    self._color_clash(tag, kept)

    def _color_clash(self, tag: LegacyTag, kept: str | None) -> None:
        """A readable legacy colour that the v3 tag does not have: another legacy
        tag of the same name, or the catalog's own tag, gave it another colour."""
        tag.color_clash = True
        self.report.color_clashes.append(
            {
                "tag_id": tag.id,
                "tag": tag.raw_name,
                "color": tag.raw_color,
                "tag_color": kept,
            }
        )
        assert tag.spec is not None
        self.report.warn(
            "tags",
            tag.id,
            f"colour {tag.raw_color!r} differs from {kept!r}, the colour of the tag "
            f"{tag.spec.name!r}; the tag keeps {kept!r}, and {tag.raw_color!r} is kept "
            "in the meta of its models",
        )

    def links_by_model(
        self, rows: Sequence[LegacyRow], links: Iterable[tuple[Any, Any]]
    ) -> dict[int, list[Any]]:
        """Group a batch's links by model; report and drop those pointing nowhere."""
        ids = {row.id for row in rows}
        links = list(links)
        self._resolve({t for m, t in links if m in ids})
        grouped: dict[int, list[Any]] = {}
        for model_id, tag_id in links:
            if model_id not in ids:
                self._orphan(
                    model_id,
                    f"a model_tags row links tag {tag_id!r} to model {model_id!r}, "
                    "which does not exist",
                )
            elif tag_id not in self.by_id:
                self._orphan(
                    model_id,
                    f"a model_tags row links it to tag {tag_id!r}, which does not exist",
                )
            else:
                grouped.setdefault(model_id, []).append(tag_id)
        return grouped

    def _orphan(self, model_id: Any, reason: str) -> None:
        self.report.orphan_links_skipped += 1
        self.report.warn("model_tags", jsonable(model_id), reason + "; skipped")

    def of_row(self, tag_ids: Sequence[Any], legacy: dict[str, Any]) -> list[TagSpec]:
        """The row's tags, and what of them goes in its ``meta.legacy``: worked out
        once for each combination of legacy tags (rows share a handful of them)."""
        key = tuple(tag_ids)
        known = self.combos.get(key)
        if known is None:
            if len(self.combos) >= self.cache_size:
                self.combos.clear()
            kept: dict[str, Any] = {}
            known = self.combos[key] = (self._tag_specs(key, kept), kept)
        specs, kept = known
        if kept:
            legacy.update(copy.deepcopy(kept))  # each row a copy of its own
        return list(specs)

    def _tag_specs(self, tag_ids: Sequence[Any], legacy: dict[str, Any]) -> list[TagSpec]:
        specs: dict[str, TagSpec] = {}
        for tag_id in tag_ids:
            tag = self.by_id[tag_id]
            if tag.raw_bytes:
                legacy.setdefault("tag_bytes_b64", {})[str(tag.id)] = tag.raw_bytes
            if tag.spec is None:
                legacy.setdefault("unusable_tags", []).append(
                    {"id": tag.id, "name": tag.raw_name, "color": tag.raw_color}
                )
                continue
            if tag.unreadable_color or tag.color_clash or not tag.color_kept:
                legacy.setdefault("tag_colors", {})[tag.key] = tag.raw_color
            specs.setdefault(tag.spec.name, tag.spec)
        return list(specs.values())


def legacy_tag(row: Any, report: ImportReport) -> LegacyTag:
    """A legacy tag in v3 form; what is odd about it goes to ``report``."""
    raw_color = jsonable(row.color)
    color, unreadable, inexact = _read_color(raw_color)
    name = text(row.name)
    try:
        if name is not None and "\x00" in name:
            raise ValidationError(f"{name!r} holds a NUL character")
        spec: TagSpec | None = TagSpec(normalize_tag_name(name), color)
    except ValidationError as exc:
        spec = None
        report.warn(
            "tags", row.id, f"its name cannot be a tag name ({exc}); kept in the meta of its models"
        )
    if unreadable:
        report.unreadable_colors.append(
            {"tag_id": row.id, "tag": jsonable(row.name), "color": raw_color}
        )
        report.warn(
            "tags", row.id, f"colour {raw_color!r} is not a colour; the tag is imported without one"
        )
    if inexact:
        report.warn(
            "tags",
            row.id,
            f"colour {raw_color!r} is read as {color} (alpha dropped or rounded); "
            "the colour as written is kept in the meta of its models",
        )
    raw_bytes = _raw_bytes(row, report)
    key = name if spec is not None else None
    return LegacyTag(
        *(row.id, spec, key, jsonable(row.name), raw_color, unreadable),
        color_kept=not inexact,
        raw_bytes=raw_bytes or None,
    )


def _read_color(raw_color: Any) -> tuple[str | None, bool, bool]:
    """The v3 colour of a legacy one; whether it is unreadable; whether it is read
    inexactly (alpha dropped or rounded)."""
    if isinstance(raw_color, str) and raw_color.strip():
        read = read_color(raw_color)
        if read is None:
            return None, True, False
        return read[0], False, not read[1]
    # A number or a blob is unreadable; blank text is just "no colour".
    return None, raw_color is not None and not isinstance(raw_color, str), False


def _raw_bytes(row: Any, report: ImportReport) -> dict[str, str]:
    """The exact bytes (base64) of a tag's name and colour stored as bytes."""
    raw_bytes = {
        column: base64.b64encode(value).decode("ascii")
        for column, value in (("name", row.name), ("color", row.color))
        if isinstance(value, bytes)
    }
    for column in raw_bytes:
        report.warn(
            "tags",
            row.id,
            f"its {column} is a BLOB or text that is not UTF-8; it is read with replacement "
            f"characters, and its exact bytes are kept in meta.legacy.tag_bytes_b64 of "
            "its models",
        )
    return raw_bytes


__all__ = ["LegacyTag", "LegacyTags", "legacy_tag"]
