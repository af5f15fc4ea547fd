"""Read catalogued files again and tell which no longer hold what the catalog says.

A scan trusts a file whose stamp (size, mtime, change time, inode) is as
recorded; bit rot, or a file replaced in place by a tool that put its stamp
back, gets past it. ``verify_models`` hashes each chosen file again with the
streaming hasher (``modelvault.hashing``: pausable and stoppable through a
``HashControl``, as the workers) and reports each file that is:

- ``changed``: it hashes to other content than its model's;
- ``gone``: the file system says it is not there;
- ``unreachable``: it cannot be looked at now (a folder that cannot be read, a
  share or drive that is not there: ``modelvault.presence``), never called gone;
- ``failed``: it could not be read (an I/O error, not a regular file any
  more, or it changed while it was being read).

It writes nothing, unless ``update`` is given: then the scan's rules apply to
what changed, as a scan that had noticed would apply them: each changed file is
staged (``pending_import``, ``source`` = ``scan``) for the workers, which settle
it (``catalog.settle.settle_file``: the model at that path takes the new content and
keeps its tags and notes, the old SHA-256 kept in ``meta.previous_sha256``).
Gone files are reported only, as a scan reports them; nothing is deleted.

Models are read a page at a time in the order of their paths, so memory stays
flat however many are verified.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, or_, select

from modelvault.database import DatabaseManager
from modelvault.db.keyed import keys_under, same_file
from modelvault.db.models import Model, PendingImport
from modelvault.errors import FileChangedError, HashCancelled, NotRegularFileError
from modelvault.hashing import HashControl, hash_file_digest
from modelvault.pathkey import absolute
from modelvault.presence import FileState, check_file, too_long, too_long_message
from modelvault.queue.states import WAITING
from modelvault.scan.report import ScanReport
from modelvault.scan.walk import FoundFile
from modelvault.scan.writer import ScanWriter  # the scan's own staging, its rules

PAGE = 500
SAMPLE = 1000  # problem files listed in a report (the counts are always whole)


class Verdict(str, enum.Enum):
    OK = "ok"
    CHANGED = "changed"
    GONE = "gone"
    UNREACHABLE = "unreachable"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Checked:
    """One model's file as verify found it."""

    sha256: str
    path: str
    name: str
    verdict: Verdict
    found_sha256: str | None = None  # what a changed file hashes to now
    reason: str | None = None


@dataclass
class VerifyReport:
    models: int = 0  # chosen
    checked: int = 0  # looked at (all of them unless stopped)
    bytes_read: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {str(v): 0 for v in Verdict})
    problems: list[Checked] = field(default_factory=list)  # the first SAMPLE not ok
    staged: int = 0  # changed files queued for the workers (``update``)
    stopped: bool = False  # the control was stopped before every file was read
    update: bool = False

    def add(self, checked: Checked) -> None:
        self.checked += 1
        self.counts[str(checked.verdict)] += 1
        if checked.verdict is not Verdict.OK and len(self.problems) < SAMPLE:
            self.problems.append(checked)

    @property
    def clean(self) -> bool:
        return self.checked == self.counts["ok"] and not self.stopped

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = [{**asdict(p), "verdict": str(p.verdict)} for p in self.problems]
        return data


@dataclass(frozen=True)
class _Target:
    sha256: str
    path: str
    name: str
    type: str
    size_bytes: int | None


Progress = Callable[["VerifyProgress"], None]


@dataclass
class VerifyProgress:
    """What a progress callback is told: totals, how far, and the file being read."""

    files_total: int
    bytes_total: int
    files_done: int = 0
    bytes_done: int = 0
    current: str | None = None


def verify_models(
    db: DatabaseManager,
    *,
    keys: Sequence[str] = (),
    under: Iterable[str | os.PathLike[str]] = (),
    update: bool = False,
    control: HashControl | None = None,
    progress: Progress | None = None,
    chunk_size: int | None = None,
) -> VerifyReport:
    """Verify the models named by ``keys`` (what ``find_model`` takes), else those
    under the folders ``under``, else every model; see the module docstring.

    ``control.stop()`` ends it after the file being read (which is not counted);
    the report says ``stopped``. Progress is called after each chunk read.
    """
    folders = [absolute(os.fspath(f)) for f in under]
    named = [db.find_model(key) for key in keys]  # a bad key is refused before any read
    report = VerifyReport(update=update)
    shas = sorted({m.sha256 for m in named})
    files, size = _totals(db, shas, folders)
    report.models = files
    state = VerifyProgress(files, size)
    stager = _Stager(db, report) if update else None
    for target in _targets(db, shas, folders):
        state.current = target.path
        checked = _check(target, control, state, progress, chunk_size)
        if checked is None:
            report.stopped = True
            break
        report.add(checked)
        state.files_done += 1
        report.bytes_read = state.bytes_done
        if stager is not None and checked.verdict is Verdict.CHANGED:
            stager.stage(target)
        if progress is not None:
            progress(state)
    if stager is not None:
        stager.flush()
    return report


def _where(shas: list[str], folders: list[str]) -> list[Any]:
    if shas:
        return [Model.sha256.in_(shas)]
    if folders:
        return [or_(*(keys_under(Model, folder) for folder in folders))]
    return []


def _totals(db: DatabaseManager, shas: list[str], folders: list[str]) -> tuple[int, int]:
    with db.session_scope() as session:
        query = select(func.count(), func.coalesce(func.sum(Model.size_bytes), 0))
        count, size = session.execute(query.where(*_where(shas, folders))).one()
    return int(count or 0), int(size or 0)


def _targets(db: DatabaseManager, shas: list[str], folders: list[str]) -> Iterator[_Target]:
    """The chosen models a page at a time, by path (each page its own short read)."""
    after: str | None = None
    columns = (Model.sha256, Model.path, Model.name, Model.type, Model.size_bytes)
    while True:
        query = select(*columns).where(*_where(shas, folders)).order_by(Model.path).limit(PAGE)
        if after is not None:
            query = query.where(Model.path > after)
        with db.session_scope() as session:
            page = [_Target(*row) for row in session.execute(query)]
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].path


def _check(
    target: _Target,
    control: HashControl | None,
    state: VerifyProgress,
    progress: Progress | None,
    chunk_size: int | None,
) -> Checked | None:
    """The file read again; None when the control stopped it."""
    start = state.bytes_done

    def read(n: int) -> None:
        state.bytes_done += n
        if progress is not None and n:
            progress(state)

    def result(verdict: Verdict, found: str | None = None, reason: str | None = None) -> Checked:
        return Checked(target.sha256, target.path, target.name, verdict, found, reason)

    try:
        digest = hash_file_digest(
            target.path, chunk_size=chunk_size, control=control, on_progress=read
        )
    except HashCancelled:
        state.bytes_done = start
        return None
    except (FileChangedError, NotRegularFileError) as exc:
        return result(Verdict.FAILED, reason=str(exc))
    except OSError as exc:
        if too_long(exc.errno, getattr(exc, "winerror", None)):
            return result(Verdict.UNREACHABLE, reason=too_long_message(target.path))
        seen = check_file(target.path)
        if seen.state is FileState.GONE:
            return result(Verdict.GONE, reason="file not found")
        if seen.state is FileState.UNREACHABLE:
            return result(Verdict.UNREACHABLE, reason=seen.reason)
        # There, but it could not be read through (an I/O error, no permission).
        return result(Verdict.FAILED, reason=exc.strerror or str(exc))
    if digest.sha256 != target.sha256:
        return result(Verdict.CHANGED, found=digest.sha256, reason="other content")
    return result(Verdict.OK)


class _Stager:
    """Changed files staged as the scan stages them, in the scan's batches."""

    def __init__(self, db: DatabaseManager, report: VerifyReport) -> None:
        self.db = db
        self.report = report
        self.writer = ScanWriter(db, ScanReport(), None, None)

    def stage(self, target: _Target) -> None:
        try:
            st = os.stat(target.path)
        except OSError:
            return  # gone since it was read: the next scan reports it
        found = FoundFile.of(target.path, st, target.type)
        with self.db.session_scope() as session:
            row = session.execute(
                select(PendingImport.id, PendingImport.status, PendingImport.meta).where(
                    same_file(PendingImport, target.path)
                )
            ).first()
        if row is not None and row.status in WAITING:
            return  # queued already: a worker will hash it
        if row is None:
            self.writer.stage(found, "changed")
        else:
            self.writer.again(row, found)
        self.report.staged += 1

    def flush(self) -> None:
        self.writer.flush()
