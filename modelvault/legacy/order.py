"""The order a legacy file as the legacy app makes it is read in (see
``legacy.LegacyCatalog.batches``): by the first digits of each row's stored hash.

The catalog's largest indexes, the keys of ``models`` and ``model_tags``, are
keyed by SHA-256. A batch of rows in id order lands all over them, so that every
batch rewrites most of their pages once they outgrow the page cache (1,000,000
rows: 8 GB written); a batch of rows from one stretch of hashes rewrites one
stretch (3 GB). The ids are sorted into buckets as they are read, with no sort
and 4 bytes an id; rows of one content (however their hash was spelled) share a
bucket, in id order, so the lowest id still comes first.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

from modelvault.normalize import parse_sha256


class HashOrder:
    """The model ids read (``ids``), and the batches ``batches`` reads: the ids
    without a hash, then bucket by bucket, a bucket being the ids whose hash
    begins with the same ``digits`` hex digits (4 bytes an id)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits
        self.ids = IdRanges()
        self.unhashed = array("i")
        self.buckets = [array("i") for _ in range(16**digits)]

    def add(self, chunk: list[tuple[Any, Any, Any]]) -> bool:
        """Rows of (id, stored hash, stored path), in id order. False when one
        must be read in id order: an id that is not an integer of 32 bits, or a
        path that is not text without NUL (the importer gives such paths their
        place by which row comes first, which must not depend on the hashes)."""
        unhashed, buckets, digits = self.unhashed, self.buckets, self.digits
        for id_, stored, path in chunk:
            if type(id_) is not int or type(path) is not str or "\x00" in path:
                return False
            bucket = _bucket(stored, digits)
            try:
                (unhashed if bucket is None else buckets[bucket]).append(id_)
            except OverflowError:
                return False
        self.ids.extend([row[0] for row in chunk])
        return True

    def batches(self, size: int) -> Iterator[list[int]]:
        """Lists of at most ``size`` ids, each in id order: the ids without a hash;
        then whole buckets, as many as fit (a larger bucket is cut in id order).
        The catalog takes each batch as one stretch of its SHA-256 indexes, and
        the legacy file is read in its order within each batch."""
        for start in range(0, len(self.unhashed), size):
            yield self.unhashed[start : start + size].tolist()
        self.unhashed = array("i")
        listed: list[int] = []
        for number, bucket in enumerate(self.buckets):
            if listed and len(listed) + len(bucket) > size:
                yield sorted(listed)
                listed = []
            for start in range(0, len(bucket), size):
                listed.extend(bucket[start : start + size])
                if len(listed) >= size:
                    yield sorted(listed)
                    listed = []
            self.buckets[number] = array("i")  # read: its memory serves the next batches
        if listed:
            yield sorted(listed)


class IdRanges:
    """Integers added in ascending order, kept as ranges of consecutive ones: a
    legacy file's ids mostly are, so they take a few bytes where an array of
    them would take 8 a row."""

    def __init__(self) -> None:
        self.firsts = array("q")
        self.lasts = array("q")

    def __bool__(self) -> bool:
        return bool(self.firsts)

    @property
    def last(self) -> int:
        return self.lasts[-1]

    def extend(self, ids: list[int]) -> None:
        if ids and ids[-1] - ids[0] == len(ids) - 1:  # one range (they are unique)
            self._add_range(ids[0], ids[-1])
            return
        for id_ in ids:
            self._add_range(id_, id_)

    def after(self, low: float, count: int) -> list[int]:
        """At most ``count`` of the integers above ``low``, in order."""
        found: list[int] = []
        for number in range(bisect_right(self.lasts, low), len(self.firsts)):
            first, last = self.firsts[number], self.lasts[number]
            start = first if low < first else math.floor(low) + 1
            found.extend(range(start, min(last, start + count - len(found) - 1) + 1))
            if len(found) >= count:
                break
        return found

    def _add_range(self, first: int, last: int) -> None:
        if self.lasts and first == self.lasts[-1] + 1:
            self.lasts[-1] = last
        else:
            self.firsts.append(first)
            self.lasts.append(last)


def _bucket(stored: Any, digits: int) -> int | None:
    """The bucket of a stored hash: for a hash the importer accepts
    (``parse_sha256`` of its text), the number its first ``digits`` hex digits
    make, so rows of one content share a bucket however it was spelled (spaces,
    case); None for most other values (any bucket would do for them)."""
    if type(stored) is str and len(stored) == 64:  # as the legacy app writes it: no trimming
        sha: str | None = stored
    elif isinstance(stored, bytes):
        sha = parse_sha256(stored.decode("utf-8", "replace"))  # as values.text reads it
    else:
        sha = parse_sha256(stored)
    if sha is None:
        return None
    try:
        bucket = int(sha[:digits], 16)
    except ValueError:
        return None
    return bucket if bucket >= 0 else None


def bucket_digits(models: int, size: int) -> int:
    """Hex digits of the buckets' prefix: enough for eight buckets a batch, so
    that whole buckets fill batches to within an eighth."""
    digits = 1
    while 16**digits * size < 8 * models and digits < 4:
        digits += 1
    return digits
