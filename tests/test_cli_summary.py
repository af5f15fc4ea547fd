"""What a run says when Ctrl-C stops it: what was read, what went back to the queue,
what still waits; and the progress line is not left on screen."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import legacy_with_files, wait_for


def _models(db: Path) -> int:
    """Models catalogued so far (0 before the tables exist)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM models").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.posix_only("sends SIGINT to a child process (Windows has CTRL_C_EVENT)")
def test_the_summary_of_an_interrupted_run_says_what_was_read_and_what_waits(
    tmp_path: Path,
) -> None:
    files = 12
    legacy, _ = legacy_with_files(tmp_path / "legacy", files, size=96 << 20, sparse=True)
    db = tmp_path / "c.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-m", "modelvault", "migrate", str(legacy), "--db", str(db)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(
        lambda: child.poll() is not None or _models(db) >= 1,
        "the first file to be hashed",
        timeout=120,
    )
    assert child.poll() is None, child.communicate()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    done = _models(db)
    summary = re.search(
        r"hashing: interrupted after [\d.]+ s and ([\d.]+ \w+) read: (\d+) files? done", out
    )
    assert summary, out
    assert summary.group(1) != "0 B"  # a file read half-way counts too
    assert int(summary.group(2)) == done
    waiting = re.search(r"(\d+) files? still to hash", out)
    assert waiting, out
    assert int(waiting.group(1)) == files - done
    assert "run the same command again to continue" in out
    assert "progress:" not in out  # the progress lines went to stderr
