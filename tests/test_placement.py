"""Where a legacy row goes, decided without a database: ``placement.place``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modelvault.legacy.placement import (
    NO_MARKS,
    NOTHING_HELD,
    Held,
    Marks,
    Place,
    Placement,
    marks_of,
    place,
)

SOURCE = "/legacy/hikaze_mm.sqlite3"
OTHER_SOURCE = "/elsewhere/hikaze_mm.sqlite3"
SHA = "a" * 64


@dataclass(frozen=True)
class Row:
    legacy_id: int = 7
    path: str = "/models/loras/x.safetensors"
    sha256: str | None = SHA
    key: str = "/models/loras/x.safetensors"  # a POSIX path is its own key
    unusable_path: str | None = None
    path_clash: str | None = None


OURS = Marks(sources=frozenset({SOURCE}), rows=frozenset({(SOURCE, 7)}))
THEIRS = Marks(sources=frozenset({OTHER_SOURCE}), rows=frozenset({(OTHER_SOURCE, 7)}))


@pytest.mark.parametrize(
    ("row", "held", "expected"),
    [
        (Row(), NOTHING_HELD, Place.NEW),
        (Row(sha256=None), NOTHING_HELD, Place.STAGE),
        (Row(unusable_path="relative"), NOTHING_HELD, Place.FAILED),
        (Row(path_clash="another row's path"), NOTHING_HELD, Place.CONFLICT),
        # staged already, whatever else holds: an earlier run (or the scan) put it there
        (Row(), Held(staged=True, staged_source=SOURCE), Place.PRESENT),
        (Row(unusable_path="relative"), Held(staged=True), Place.PRESENT),
        # a model at its path that a legacy import put there
        (Row(), Held(at_path=OURS), Place.PRESENT),
        (Row(sha256=None), Held(at_path=OURS), Place.PRESENT),
        # a model the user catalogued by other means at its path
        (Row(), Held(at_path=NO_MARKS), Place.SETTLE),
        (Row(sha256=None), Held(at_path=NO_MARKS), Place.STAGE),
        # its content is catalogued elsewhere, or new earlier in the same batch
        (Row(), Held(of_hash=NO_MARKS), Place.SETTLE),
        (Row(), Held(of_hash=OURS), Place.SETTLE),
        (Row(), Held(new_in_batch=True), Place.SETTLE),
        (Row(sha256=None), Held(of_hash=NO_MARKS), Place.STAGE),
    ],
)
def test_where_a_row_goes(row: Row, held: Held, expected: Place) -> None:
    assert place(row, held, SOURCE).place is expected


def test_a_model_that_moved_away_from_the_rows_path_holds_the_row_already() -> None:
    moved = Marks(OURS.sources, OURS.rows, previous_keys=(Row().key,))
    assert place(Row(), Held(of_hash=moved), SOURCE) == Placement(Place.PRESENT)
    # ...but only its own row: another legacy id at that old path is settled
    assert place(Row(legacy_id=8), Held(of_hash=moved), SOURCE).place is Place.SETTLE


def test_a_row_imported_from_another_legacy_file_is_present_with_a_warning() -> None:
    for held in (Held(at_path=THEIRS), Held(staged=True, staged_source=OTHER_SOURCE)):
        placement = place(Row(), held, SOURCE)
        assert placement.place is Place.PRESENT
        assert placement.warning is not None
        assert f"imported already from {OTHER_SOURCE}" in placement.warning
    assert place(Row(), Held(at_path=OURS), SOURCE).warning is None
    assert place(Row(), Held(staged=True, staged_source=None), SOURCE).warning is None


def test_marks_come_from_meta_legacy_and_the_records_that_gave_way() -> None:
    meta = {
        "legacy": {"source": SOURCE, "id": 7},
        "superseded": [
            {"path": "/old", "meta": {"legacy": {"source": OTHER_SOURCE, "id": 3}}},
            {"path": "/odd", "meta": {"legacy": {"source": 5, "id": 4}}},  # not a source
            "not a record",
        ],
        "previous_paths": ["/before", 12],
    }
    marks = marks_of(meta)
    assert marks.sources == {SOURCE, OTHER_SOURCE}
    assert marks.rows == {(SOURCE, 7), (OTHER_SOURCE, 3)}
    assert marks.previous_keys == ("/before",)


@pytest.mark.parametrize(
    "meta", [None, [], {}, {"legacy": "x"}, {"legacy": {"id": 1}}, {"superseded": {}}]
)
def test_a_meta_without_legacy_provenance_has_no_marks(meta: object) -> None:
    assert marks_of(meta) == NO_MARKS


def test_a_legacy_id_that_is_not_an_integer_marks_the_source_only() -> None:
    marks = marks_of({"legacy": {"source": SOURCE, "id": True}})
    assert (marks.sources, marks.rows) == ({SOURCE}, frozenset())
