"""The reads of ``model_tags``: a batch's links, and the links that name no model.

Every read is short (a window of about ``LINKS_PER_BATCH`` links), so no read
is held open while the importer works, and memory stays flat however many
links there are. The reads by range compare ``model_id`` as the reader's
``link_key`` says (see ``LegacyCatalog``).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from modelvault.legacy.layout import LegacyBatch, LegacyRow

# A batch of models holds at most this many links (fewer models if need be), so
# memory stays flat however many tags a model has; one model's links come whole.
LINKS_PER_BATCH = 100_000

# A cursor on the legacy file, for one short read (``LegacyCatalog.reading``).
Reading = Callable[[], AbstractContextManager[Any]]

# Every read of links by model_id: the links whose model_id meets ``where``, in
# key order; or the window's end, the model_id LINKS_PER_BATCH links on (OFFSET).
# ``where`` compares the link key. A text value sorts after every number in SQLite,
# a blob after every text, and NULL meets no comparison.
_LINKS_WHERE = "SELECT model_id, tag_id FROM model_tags WHERE {where} ORDER BY model_id, tag_id"
_WINDOW_END_WHERE = (
    "SELECT model_id FROM model_tags WHERE {where} ORDER BY model_id LIMIT 1 OFFSET ?"
)
_NOT_LISTED = " AND model_id NOT IN (SELECT value FROM json_each(?))"
_LINKS_OF_NULL = "SELECT model_id, tag_id FROM model_tags WHERE model_id IS NULL ORDER BY tag_id"

# The links of the listed models in the list's order, each model's by tag id.
# CROSS JOIN makes the list the outer loop and each model's links come from the
# (model_id, tag_id) key, so they come in that order with no sort and LIMIT stops
# early; an ORDER BY would first read every link of the batch's models (ten
# million in bench/import_bench.py --links-stress). listed_links checks it.
_LINKS_LISTED = (
    "SELECT l.model_id, l.tag_id FROM json_each(?) AS j "
    "CROSS JOIN model_tags AS l ON l.model_id = j.value"
)
_LINKS_LISTED_SORTED = (
    "SELECT l.model_id, l.tag_id FROM json_each(?) AS j "
    "JOIN model_tags AS l ON l.model_id = j.value ORDER BY j.key"
)


def listed_links(
    cursor: Any, listed: str, position: dict[int, int], limit: int | None
) -> list[Any]:
    """The links of the models ``listed`` (a JSON array), in its order: at most
    ``limit`` (None: all)."""
    suffix, params = ("", (listed,)) if limit is None else (" LIMIT ?", (listed, limit))
    links: list[Any] = cursor.execute(_LINKS_LISTED + suffix, params).fetchall()
    models = [position[model_id] for model_id, _ in links]
    if models == sorted(models):  # in the list's order: one pass (timsort)
        return links
    # Another join order after all: the sort in SQL, which reads all the links first.
    sorted_links: list[Any] = cursor.execute(_LINKS_LISTED_SORTED + suffix, params).fetchall()
    return sorted_links


class Ranges:
    """The links of the ranges (after, top] for one ``after``, read on ``cursor``."""

    def __init__(self, cursor: Any, key: str, after: Any) -> None:
        self.cursor = cursor
        where, self.bounds = (
            (f"{key} <= ?", []) if after is None else (f"{key} > ? AND {key} <= ?", [after])
        )
        self.sql = _LINKS_WHERE.format(where=where)

    def links(self, top: Any, limit: int | None) -> list[Any]:
        """The links whose model_id is in (after, top] (all up to top when ``after``
        is None), at most ``limit`` of them."""
        if limit is None:
            rows: list[Any] = self.cursor.execute(self.sql, [*self.bounds, top]).fetchall()
        else:
            rows = self.cursor.execute(f"{self.sql} LIMIT ?", [*self.bounds, top, limit]).fetchall()
        return rows

    def count(self, top: Any, limit: int) -> int:
        """How many links ``links`` gives for (after, top], counting no further than ``limit``."""
        found = self.cursor.execute(
            f"SELECT count(*) FROM ({self.sql} LIMIT ?)", [*self.bounds, top, limit]
        )
        return int(found.fetchone()[0])

    def cut(
        self, batch: list[LegacyRow], links: list[Any], budget: int
    ) -> tuple[list[LegacyRow], list[Any]]:
        """Fewer models, so that the batch's links stay within ``budget``: the most
        models whose id range holds at most ``budget`` links, or, when the first
        model alone has more, that model with all its links.

        SQLite counts the links of a range, as it read them: a hand-made file may
        mix types in its ids, and only its comparisons agree with the range each
        batch reads."""
        whole, more = 0, len(batch)  # whole rows found; at most this many
        while whole < more:
            middle = (whole + more + 1) // 2
            if self.count(batch[middle - 1].id, budget + 1) <= budget:
                whole = middle
            else:
                more = middle - 1
        if whole == 0:
            return batch[:1], self.links(batch[0].id, None)
        return batch[:whole], links[: self.count(batch[whole - 1].id, budget)]


def links_of_no_listed_model(reading: Reading, ids: Any) -> Iterator[LegacyBatch]:
    """The links up to the last of ``ids`` (``order.IdRanges``) whose model_id is
    none of them, a window of about ``LINKS_PER_BATCH`` links (and ids) per read.

    Whether a link names a model is decided by the ids read, not by the models
    there are now: the batch that listed an id read its links, so a model the
    legacy app deleted after its id was read had its links read once, there.
    """
    top = ids.last
    compare, low = ">=", float("-inf")  # the first window: a number below every id
    while True:
        listed = ids.after(low, LINKS_PER_BATCH)
        high = listed[-1]
        where = f"model_id {compare} ? AND model_id <= ?"
        with reading() as cursor:
            end = cursor.execute(
                _WINDOW_END_WHERE.format(where=where), (low, high, LINKS_PER_BATCH)
            ).fetchone()
            if end is not None:
                high = end[0]
                listed = listed[: bisect_right(listed, high)]
            links = cursor.execute(
                _LINKS_WHERE.format(where=where + _NOT_LISTED),
                (low, high, json.dumps(listed)),
            ).fetchall()
        if links:
            yield LegacyBatch([], links)
        if high == top:
            return
        compare, low = ">", high


def links_past(reading: Reading, key: str, after: Any) -> Iterator[LegacyBatch]:
    """The links whose model_id (compared as ``key``) is past ``after`` (None:
    every link) or NULL, a window of about ``LINKS_PER_BATCH`` links per read
    (always one batch, empty or not). Past the last id is any number above it,
    and any text or blob."""
    with reading() as cursor:  # a hand-made file's: the legacy app's are NOT NULL
        links = cursor.execute(_LINKS_OF_NULL).fetchall()
    compare, low = (">=", float("-inf")) if after is None else (">", after)
    while True:
        past = f"{key} {compare} ?"
        with reading() as cursor:
            end = cursor.execute(
                _WINDOW_END_WHERE.format(where=past), (low, LINKS_PER_BATCH)
            ).fetchone()
            if end is None:  # the rest
                links += cursor.execute(_LINKS_WHERE.format(where=past), (low,)).fetchall()
            else:
                window = _LINKS_WHERE.format(where=f"{past} AND {key} <= ?")
                links += cursor.execute(window, (low, end[0])).fetchall()
        yield LegacyBatch([], links)
        if end is None:
            return
        links, compare, low = [], ">", end[0]
