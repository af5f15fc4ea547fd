"""The importer's read-ahead: the next batch is prepared by a helper thread, only
when the consumer allows it, never more than one ahead, errors raised in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from modelvault.migration.read_ahead import ReadAhead


class Recorder:
    """Items 0..n-1; each records what the consumer had done when it was computed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.taken = 0  # items the consumer took
        self.allowed = 0  # items the consumer allowed to be computed (beyond the first)
        self.seen: list[tuple[int, int, int]] = []  # (item, taken, allowed) when computed
        self.threads: set[str] = set()
        self.closed_in: str | None = None

    def items(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.threads.add(threading.current_thread().name)
                self.seen.append((i, self.taken, self.allowed))
                yield i
        finally:
            self.closed_in = threading.current_thread().name


def test_items_come_in_order_each_computed_only_once_allowed() -> None:
    rec = Recorder(5)
    got = []
    with ReadAhead(rec.items()) as ahead:
        for item in ahead:
            rec.taken += 1
            got.append(item)
            rec.allowed += 1
            ahead.allow_next()
            ahead.allow_next()  # a second call allows nothing more
    assert got == [0, 1, 2, 3, 4]
    # Item i+1 was computed only after item i was taken and the next allowed.
    assert rec.seen == [(0, 0, 0)] + [(i, i, i) for i in range(1, 5)]
    assert rec.threads == {"modelvault-import-reader"}
    assert rec.closed_in == "modelvault-import-reader"


def test_taking_allows_the_next_itself() -> None:
    rec = Recorder(3)
    with ReadAhead(rec.items()) as ahead:
        assert list(ahead) == [0, 1, 2]
        assert list(ahead) == []  # finished: no wait on a helper that has ended
    assert [taken for _, taken, _ in rec.seen] == [0, 0, 0]


def test_an_error_of_the_helper_is_raised_where_its_item_would_come() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("unreadable batch")

    with ReadAhead(items()) as ahead:
        assert next(ahead) == 1
        with pytest.raises(ValueError, match="unreadable batch"):
            next(ahead)
        with pytest.raises(StopIteration):
            next(ahead)


def test_a_consumer_that_stops_early_stops_the_helper() -> None:
    rec = Recorder(1000)
    with ReadAhead(rec.items()) as ahead:
        assert next(ahead) == 0
        ahead.allow_next()
    # close() joined the helper: the generator was closed in its own thread, and
    # at most the one allowed item was computed after the first.
    assert rec.closed_in == "modelvault-import-reader"
    assert len(rec.seen) <= 2
