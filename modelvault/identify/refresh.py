"""Identifying models catalogued before: one small read of each file's header.

``identify_models(db, sha256s)`` reads the headers of the models' files in a
pool (``identify.readers``: worker processes for many files on more than one
core, else a few threads, as a header read may wait on the disk or the
network), then writes what they say (``apply_found``) a batch at a time, each
batch one short transaction, while the pool reads the next batch: a stop loses
at most the batch in hand, and a worker or a person is never kept waiting long.
``control`` pauses and stops it between batches, as it does the hashing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from modelvault.db.models import Model
from modelvault.hashing import HashControl
from modelvault.identify.catalog import IDENTIFY, apply_found
from modelvault.identify.readers import Read, Readers

if TYPE_CHECKING:
    from modelvault.database import DatabaseManager

__all__ = ["IdentifyReport", "identify_models", "models_to_identify"]

BATCH = 256  # models per transaction
THREADS = 8  # header reads at once in threads: they wait on the disk, not the CPU
IDENTIFIED = "identified"
UNREADABLE = "unreadable"


@dataclass
class IdentifyReport:
    """What ``identify_models`` did: models identified, files it could not read (with
    why, by path), and which bases it found."""

    identified: int = 0
    with_base: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    problems: int = 0  # files read whose header has a problem (meta.identify.problem)
    stopped: bool = False


def models_to_identify(db: DatabaseManager, *, missing_base: bool = False) -> list[str]:
    """The SHA-256s of every model (``missing_base``: those without a base), by path."""
    query = select(Model.sha256).order_by(Model.path)
    if missing_base:
        query = query.where(Model.base.is_(None))
    with db.session_scope() as session:
        return list(session.scalars(query))


def identify_models(
    db: DatabaseManager,
    sha256s: Sequence[str],
    *,
    control: HashControl | None = None,
    on_file: Callable[[str, str], None] | None = None,
    threads: int = THREADS,
    processes: int | None = None,
) -> IdentifyReport:
    """Read the header of each model's file and write what it says to the model.

    ``on_file(path, outcome)`` is called for each file as it is done
    (``"identified"`` or ``"unreadable"``). A file that cannot be read (gone, not
    allowed) leaves its model as it was and is named in the report.
    ``processes``: worker processes to read in (None: as many as cores, from
    ``readers.PROCESSES_FROM`` files; 0: threads only). ``IdentifyError`` if one
    dies; what was written before stays.
    """
    report = IdentifyReport()
    with Readers.for_files(len(sha256s), threads=threads, processes=processes) as readers:
        reading: deque[_Batch] = deque()
        for batch in _batches(sha256s, BATCH):
            if not _running(control):
                report.stopped = True
                break
            paths = _paths(db, batch)
            reading.append(_Batch(paths, readers.start(list(paths.values()))))
            if len(reading) > 1:  # the pool reads this batch while the one before is written
                _record(db, readers, reading.popleft(), report, on_file)
        while reading and not report.stopped:
            if _running(control):
                _record(db, readers, reading.popleft(), report, on_file)
            else:  # the batch read ahead is dropped, as a batch in hand is
                report.stopped = True
    return report


@dataclass
class _Batch:
    paths: dict[str, str]  # by SHA-256
    tasks: list[Future[list[Read]]]


def _record(
    db: DatabaseManager,
    readers: Readers,
    batch: _Batch,
    report: IdentifyReport,
    on_file: Callable[[str, str], None] | None,
) -> None:
    """Write what ``batch``'s files say to their models, and count it in ``report``."""
    read = dict(zip(batch.paths, readers.results(batch.tasks), strict=True))
    found = {sha: f for sha, f in read.items() if not isinstance(f, str)}
    bases = _write(db, found)
    report.identified += len(bases)
    report.with_base += sum(base is not None for base in bases.values())
    report.problems += sum(bool(f[IDENTIFY].get("problem")) for f in found.values())
    for sha, path in batch.paths.items():
        outcome = read[sha]
        if isinstance(outcome, str):
            report.unreadable[path] = outcome
        if on_file is not None:
            on_file(path, UNREADABLE if isinstance(outcome, str) else IDENTIFIED)


def _running(control: HashControl | None) -> bool:
    if control is None:
        return True
    control.wait_until_running()
    return not control.stopped


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _paths(db: DatabaseManager, sha256s: Sequence[str]) -> dict[str, str]:
    with db.session_scope() as session:
        rows = session.execute(select(Model.sha256, Model.path).where(Model.sha256.in_(sha256s)))
        return {row[0]: row[1] for row in rows}


def _write(db: DatabaseManager, found: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    """Write ``found`` (by SHA-256) to the models still catalogued; their bases now."""
    from modelvault.catalog.curation import writing  # curation imports this package

    def work(session: Session) -> dict[str, str | None]:
        query = select(Model).where(Model.sha256.in_(found)).with_for_update()
        bases: dict[str, str | None] = {}
        for model in session.scalars(query.execution_options(populate_existing=True)):
            apply_found(model, found[model.sha256])
            bases[model.sha256] = model.base
        return bases

    return writing(db, work) if found else {}
