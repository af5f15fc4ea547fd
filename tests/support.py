"""Building blocks for tests: legacy catalogs with real files behind them, and
what a test watches (the statements a catalog runs)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

from modelvault import DatabaseManager
from modelvault.migration.sample import (
    LegacyModel,
    LegacyTag,
    scan_time_ms,
    system_tags,
    write_legacy_catalog,
)


def run_modelvault(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``modelvault`` command in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "modelvault", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its wait() is an interval between looks
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.01)


def write_file(path: Path, size: int, seed: int, *, sparse: bool = False) -> str:
    """A file of ``size`` bytes (zeros if ``sparse``, cheap at any size); returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if sparse:
        with path.open("wb") as out:
            out.write(seed.to_bytes(8, "little"))
            out.truncate(size)
        digest = hashlib.sha256()
        with path.open("rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    data = hashlib.shake_256(str(seed).encode()).digest(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def legacy_with_files(
    root: Path,
    count: int,
    *,
    size: int = 4096,
    sparse: bool = False,
    hashed: int = 0,
    missing: int = 0,
) -> tuple[Path, dict[str, str]]:
    """A layout-2 legacy catalog of ``count`` model files under ``root``.

    The first ``hashed`` rows carry their real hash, the last ``missing`` files
    are deleted; every row has a coloured tag and a note. Returns the catalog
    path and {path: sha256}.
    """
    rows, digests = [], {}
    for i in range(1, count + 1):
        path = root / "models" / "loras" / f"model_{i:04d}.safetensors"
        sha = write_file(path, size, i, sparse=sparse)
        digests[str(path)] = sha
        scanned_at = scan_time_ms(path.stat().st_mtime_ns)  # the legacy app saw it once written
        if i > count - missing:
            os.unlink(path)
        rows.append(
            LegacyModel(
                id=i,
                path=str(path),
                type="lora",
                size_bytes=size,
                hash_hex=sha if i <= hashed else "",
                created_at=scanned_at,
                extra_json=f'{{"description": "note {i}"}}',
            )
        )
    links = [(i, 2) for i in range(1, count + 1)] + [(i, 8) for i in range(1, count + 1, 2)]
    legacy = write_legacy_catalog(
        root / "hikaze_mm.sqlite3",
        rows=rows,
        tags=[*system_tags(), LegacyTag(8, "Odd", "#F00")],
        links=links,
    )
    return legacy, digests


@contextmanager
def statements_run(db: DatabaseManager) -> Iterator[list[str]]:
    """The SQL text of every statement ``db`` runs inside the block, in order."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


@contextmanager
def as_nobody() -> Iterator[None]:
    """Run the block as the unprivileged user ``nobody`` (effective ids only, so
    the test process gets root back afterwards); for tests running as root."""
    import pwd  # POSIX only

    nobody = pwd.getpwnam("nobody")
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
