"""What the scan's tests share: files written with their hash, a scan followed
by the workers, the staging rows by path, the files opened under a folder, and
the benchmark's tree of model files with a catalog that holds them."""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from modelvault import DatabaseManager, Settings
from modelvault.db.models import PendingImport
from modelvault.migration.worker import WorkerReport, process_pending
from modelvault.scan import ScanReport, scan_roots, settle_after_hashing

# The trees the scan's benchmark measures are the trees its tests look at.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from scan_bench import catalogue_as_found, make_tree

__all__ = [
    "FAST",
    "catalogue_as_found",
    "make_tree",
    "opens_under",
    "scan_and_hash",
    "staging",
    "write",
]

FAST = Settings(retry_backoff_seconds=0, lease_seconds=30, max_attempts=3, workers=2)


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def scan_and_hash(db: DatabaseManager, *roots: Any) -> tuple[ScanReport, WorkerReport]:
    report = scan_roots(db, roots)
    result = process_pending(db, settings=FAST)
    settle_after_hashing(db, report)
    return report, result


def staging(db: DatabaseManager) -> dict[str, PendingImport]:
    with db.session_scope() as s:
        return {row.path: row for row in s.scalars(select(PendingImport))}


@contextlib.contextmanager
def opens_under(folder: Path) -> Iterator[list[str]]:
    """Every file opened under ``folder`` while the block runs (audit events)."""
    opened: list[str] = []
    prefix = str(folder)
    active = True

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active and event == "open" and isinstance(args[0], str) and args[0].startswith(prefix):
            opened.append(args[0])

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet after the block
    try:
        yield opened
    finally:
        active = False
