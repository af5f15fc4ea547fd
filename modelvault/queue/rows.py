"""A staging row as a worker holds it (``ClaimedRow``), the values read back from a
claim, and the tag ids a worker remembers between batches (``TagCache``)."""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelvault.catalog.settle import HashedFile
from modelvault.catalog.stamp_meta import SCAN_MTIME_NS, without_scan_stat
from modelvault.catalog.tags import TagSpec
from modelvault.db.types import as_utc
from modelvault.errors import ValidationError
from modelvault.file_stamp import FILE_STAT

__all__ = ["ClaimedRow", "StoredJSON", "TagCache", "claimed_row"]


class StoredJSON(Mapping[str, Any]):
    """A JSON object as the catalog stored it: its text, decoded on first use.

    A staging row's meta usually goes to its model as it is: kept as text, it
    is written back as the same text, never decoded and encoded again. Anything
    that reads it (a merge, a conflict) decodes it once, as a dict would.
    """

    __slots__ = ("_value", "text")

    def __init__(self, text: str) -> None:
        self.text = text  # the text of a JSON object, checked by SQLite's json()
        self._value: dict[str, Any] | None = None

    @property
    def value(self) -> dict[str, Any]:
        if self._value is None:
            self._value = dict(json.loads(self.text))
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self.value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"StoredJSON({self.text!r})"

    def with_key(self, key: str, value: Any) -> StoredJSON:
        """This object with ``key`` added last, still as text (so the rest is not decoded
        and encoded again); ``key`` must not be in it."""
        return self.with_keys({key: value})

    def with_keys(self, added: Mapping[str, Any]) -> StoredJSON:
        """``with_key`` for each of ``added``, in its order, as one new text."""
        if not added:
            return self
        head = self.text.rstrip()[:-1].rstrip()  # the object without its closing brace
        joiner = "" if head.endswith("{") else ","
        members = _COMPACT.encode(added)[1:-1]  # one encoding for all of them
        return StoredJSON(f"{head}{joiner}{members}}}")


@dataclass(frozen=True)
class ClaimedRow:
    """A staging row a worker holds, copied out of its session."""

    id: int
    path: str
    name: str
    type: str
    base: str | None
    size_bytes: int | None
    created_at: datetime | None
    meta: Mapping[str, Any]  # on SQLite, usually the stored text until read (StoredJSON)
    tags: Sequence[Any]  # as staged: {"name", "color"} entries (TagSpec.parse takes them)
    attempts: int
    source: str | None = None

    def hashed(
        self,
        sha256: str,
        size_bytes: int,
        mtime_ns: int,
        file_stat: Mapping[str, int] | None = None,
        found: Mapping[str, Any] | None = None,
    ) -> HashedFile:
        """The catalog's view of this row once its content is known; ``file_stat``: the
        rest of the stamp the file had as it was hashed (see ``modelvault.file_stamp``);
        ``found``: what its header said (``identify.catalog.HeaderTap.found``).

        Tags go in name order so concurrent transactions on PostgreSQL insert
        shared tag names in the same order (no lock-order deadlock).
        """
        # sorted() is stable: a name given twice keeps its first colour in ensure_tags.
        specs = sorted(self.specs, key=_spec_name)
        return HashedFile(
            sha256=sha256,
            path=self.path,
            name=self.name,
            type=self.type,
            base=self.base,
            size_bytes=size_bytes,
            mtime_ns=mtime_ns,
            created_at=self.created_at,
            # Stored text holds no scan stamp (see read_meta): left undecoded.
            meta=self.meta if isinstance(self.meta, StoredJSON) else without_scan_stat(self.meta),
            tags=specs,
            source=self.source,
            file_stat=file_stat,
            found=found,
        )

    @property
    def specs(self) -> list[TagSpec]:
        """The staged tags, parsed once; ``ValidationError`` if one can never be stored."""
        # Kept in the instance's dict by hand: functools.cached_property takes a lock
        # on every first read in Python 3.11, a cost paid for every row.
        specs: list[TagSpec] | None = self.__dict__.get("_specs")
        if specs is None:
            specs = self.__dict__["_specs"] = [_parse_tag(entry) for entry in self.tags]
        return specs

    def tag_problem(self) -> ValidationError | None:
        """Why the staged tags can never be stored, or None if they can."""
        try:
            self.specs  # noqa: B018 (parses and caches)
        except ValidationError as exc:
            return exc
        return None


_spec_name = operator.attrgetter("name")
# One encoder made once: json.dumps with any argument of its own makes a new one a call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _parse_tag(entry: Any) -> TagSpec:
    """``TagSpec.parse``, remembered for the usual staged form (a few names used again
    and again)."""
    if isinstance(entry, dict) and entry.keys() <= {"name", "color"}:
        name, color = entry.get("name"), entry.get("color")
        if isinstance(name, str) and (color is None or isinstance(color, str)):
            return _parse_named_tag(name, color)
    return TagSpec.parse(entry)


@functools.lru_cache(maxsize=4096)
def _parse_named_tag(name: str, color: str | None) -> TagSpec:
    return TagSpec.parse({"name": name, "color": color})  # a refusal raises, and is not kept


def claimed_row(values: Sequence[Any]) -> ClaimedRow:
    """A row as the claim returns it (``statements.CLAIMED_COLUMNS``), its values read."""
    row_id, path, name, kind, base, size, created, meta, tags, attempts, source = values
    tags = _decode_tags(tags) if isinstance(tags, str) else list(tags or [])
    created = _read_stored_time(created)
    return ClaimedRow(
        row_id, path, name, kind, base, size, created, read_meta(meta), tags, attempts, source
    )


def read_meta(value: Any) -> Mapping[str, Any]:
    """A staged meta as a mapping: on SQLite, text (valid: the claim's ``json()``
    checked it) stays text until something reads it, unless it holds the scan's
    stamp of the file (which a model's meta loses: see ``catalog.stamp_meta.without_scan_stat``).
    psycopg decodes JSON itself."""
    if isinstance(value, str):
        if value.startswith("{") and SCAN_MTIME_NS not in value and FILE_STAT not in value:
            return StoredJSON(value)
        value = json.loads(value)
    return dict(value or {})


# The rows of one staging batch often share their created_at, and tag lists repeat
# (a folder's tags, a few favourites): each distinct value is converted once. The
# values kept are immutable (datetimes, tuples), or tag entries nothing changes.
_read_stored_time = functools.lru_cache(maxsize=1024)(as_utc)


@functools.lru_cache(maxsize=4096)
def _decode_tags(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text) or ())


class TagCache:
    """Tag ids the worker has seen, so most batches need no tag query at all.

    ``catalog.tags.ensure_tags`` skips every name found in the cache it is given,
    and with it the filling-in of a colour the tag lacks. So a name is offered
    as cached only when no colour is wanted for it, or when its tag is known to
    have one (it cannot lose it: colours are filled, never cleared). That way
    the catalog ends the same whether or not a restart emptied the cache.
    """

    def __init__(self) -> None:
        self.coloured: dict[str, int] = {}  # tags known to have a colour
        self.plain: dict[str, int] = {}  # tags that may have none

    def view(self, specs: Iterable[TagSpec]) -> dict[str, int]:
        """A cache for ``ensure_tags``/``settle_file`` asked for ``specs``."""
        want_colour = {spec.name for spec in specs if spec.color is not None}
        view = dict(self.coloured)
        view.update((n, i) for n, i in self.plain.items() if n not in want_colour)
        return view

    def learn(self, specs: Iterable[TagSpec], view: dict[str, int]) -> None:
        """Remember what ``view`` holds now that ``specs`` were ensured with it."""
        for spec in specs:
            tag_id = view.get(spec.name)
            if tag_id is None:
                continue
            if spec.color is not None:  # it has a colour now: its own, or this one
                self.coloured[spec.name] = tag_id
                self.plain.pop(spec.name, None)
            elif spec.name not in self.coloured:
                self.plain[spec.name] = tag_id

    def copy(self) -> TagCache:
        other = TagCache()
        other.coloured, other.plain = dict(self.coloured), dict(self.plain)
        return other

    def clear(self) -> None:
        self.coloured.clear()
        self.plain.clear()
