"""File stamps, and how Windows opens a file to hash: the pure logic, on every system."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelvault.file_stamp import (
    FILE_STAT,
    FileStamp,
    Verdict,
    compare,
    moved_intact,
    recorded_stamp,
    stamp_of,
    stat_marks,
)
from modelvault.queue.rows import StoredJSON
from modelvault.scan.stamps import column_verdict, verdict
from modelvault.scan.walk import FoundFile
from modelvault.winfiles import (
    FILE_FLAG_OPEN_REPARSE_POINT,
    FILE_SHARE_DELETE,
    FILE_SHARE_READ,
    FILE_SHARE_WRITE,
    GENERIC_READ,
    OPEN_EXISTING,
    create_file_arguments,
)

RECORDED = FileStamp(size=100, mtime_ns=5_000, ctime_ns=7_000, ino=42)


@pytest.mark.parametrize(
    ("found", "verdict"),
    [
        (RECORDED, Verdict.SAME),
        (RECORDED._replace(size=101), Verdict.CHANGED),
        (RECORDED._replace(mtime_ns=5_001), Verdict.CHANGED),
        # Same size, mtime put back: only the change time tells.
        (RECORDED._replace(ctime_ns=9_000), Verdict.CHANGED),
        # Another file put in its place with the same size and mtime: a change time of its own.
        (RECORDED._replace(ctime_ns=8_000, ino=43), Verdict.CHANGED),
        # The same file numbered anew by its file system (FAT, exFAT, sshfs at each
        # mount): its new inode is recorded, nothing is read again.
        (RECORDED._replace(ino=43), Verdict.STAMP),
        # Without a change time (Windows), the file index is all that tells.
        (RECORDED._replace(ctime_ns=None, ino=43), Verdict.CHANGED),
        # What a system does not give is not compared (Windows: no ctime; a listing: no inode).
        (RECORDED._replace(ctime_ns=None), Verdict.SAME),
        (RECORDED._replace(ctime_ns=None, ino=None), Verdict.SAME),
    ],
)
def test_what_tells_a_file_changed(found: FileStamp, verdict: Verdict) -> None:
    assert compare(RECORDED, found) is verdict


def test_a_file_renamed_is_intact_whatever_its_change_time() -> None:
    assert moved_intact(RECORDED, RECORDED._replace(ctime_ns=9_000))
    assert moved_intact(RECORDED, RECORDED._replace(ino=None))
    assert not moved_intact(RECORDED, RECORDED._replace(ino=43))
    assert not moved_intact(RECORDED, RECORDED._replace(mtime_ns=1))


def test_a_record_of_an_older_version_takes_the_stamp_of_a_file_with_its_size_and_mtime() -> None:
    older = FileStamp(100, 5_000)  # size and mtime only: before change times were kept
    assert compare(older, RECORDED) is Verdict.STAMP
    assert compare(older, RECORDED._replace(mtime_ns=1)) is Verdict.CHANGED
    assert compare(older, RECORDED._replace(ctime_ns=None, ino=None)) is Verdict.SAME
    half = FileStamp(100, 5_000, ctime_ns=7_000)
    assert compare(half, RECORDED) is Verdict.STAMP  # the inode is new
    assert compare(half, RECORDED._replace(ctime_ns=8_000)) is Verdict.CHANGED


def test_stamps_as_the_catalog_keeps_them() -> None:
    assert stat_marks(RECORDED) == {"ctime_ns": 7_000, "ino": 42}
    assert stat_marks(FileStamp(1, 2)) == {}
    meta = {"notes": "mine", FILE_STAT: stat_marks(RECORDED)}
    assert recorded_stamp(100, 5_000, meta) == RECORDED
    assert recorded_stamp(100, 5_000, {"notes": "mine"}) == FileStamp(100, 5_000)
    assert recorded_stamp(100, 5_000, None) == FileStamp(100, 5_000)
    # A file_stat edited by hand is not trusted: it counts as not recorded.
    for bad in ("7000", [7_000], {"ctime_ns": "7000", "ino": True}, {"ctime_ns": 7.0}):
        assert recorded_stamp(100, 5_000, {FILE_STAT: bad}) == FileStamp(100, 5_000)


def test_a_model_streamed_by_a_scan_is_judged_as_its_meta_would_be() -> None:
    found = FoundFile("/m/a.safetensors", 100, 5_000, "lora", ctime_ns=7_000, ino=42)
    marks = stat_marks(RECORDED)
    for ctime, ino in ((7_000, 42), ("7000", "42"), (None, None), ("x", 42), (7_001, 42)):
        meta = {FILE_STAT: {"ctime_ns": ctime, "ino": ino}}
        as_streamed = column_verdict(100, 5_000, ctime, ino, found)  # SQLite: ints; PG: text
        if isinstance(ctime, str) and ctime.isdigit():
            meta = {FILE_STAT: marks}  # PostgreSQL gives the stored number as text
        assert as_streamed is verdict(100, 5_000, meta, found), (ctime, ino)
    assert column_verdict(101, 5_000, 7_000, 42, found) is Verdict.CHANGED


def test_a_stamp_from_a_stat(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    st = os.stat(path)
    stamp = stamp_of(st, windows=False)
    assert stamp == FileStamp(7, st.st_mtime_ns, st.st_ctime_ns, st.st_ino or None)
    # Windows' st_ctime is the creation time: a write does not move it, never compared.
    assert stamp_of(st, windows=True) == stamp._replace(ctime_ns=None)


def test_a_stored_object_takes_a_key_as_text() -> None:
    for text in ('{"a": 1, "b": [1, 2]}', "{}", "{ }", '{"a":{"b":{}}}'):
        added = StoredJSON(text).with_key(FILE_STAT, {"ctime_ns": 1, "ino": 2})
        assert json.loads(added.text) == {**json.loads(text), FILE_STAT: {"ctime_ns": 1, "ino": 2}}


def test_a_stored_object_takes_several_keys_at_once_in_their_order() -> None:
    problem = 'caf\u00e9 "quoted"'
    more = {FILE_STAT: {"ino": 2}, "identify": {"problem": problem, "n": [1.5, None]}}
    for text in ('{"a": "\u00e9t\u00e9"}', "{}", ' {"a":{"b":{}}} '):
        added = StoredJSON(text).with_keys(more)
        assert json.loads(added.text) == {**json.loads(text), **more}
        assert list(json.loads(added.text))[-2:] == [FILE_STAT, "identify"]
        assert json.loads(StoredJSON(text).with_keys({}).text) == json.loads(text)


def test_windows_opens_a_file_to_hash_so_that_others_may_move_or_replace_it() -> None:
    args = create_file_arguments()
    assert args.share == FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
    assert (args.access, args.disposition) == (GENERIC_READ, OPEN_EXISTING)
    assert not args.flags & FILE_FLAG_OPEN_REPARSE_POINT  # a link is followed
    own = create_file_arguments(follow_symlinks=False)
    assert own.flags & FILE_FLAG_OPEN_REPARSE_POINT  # the link itself, refused as not regular
    assert own._replace(flags=args.flags) == args
