"""What a scan found and changed: the report, one event per changed file, and
names made safe to show.

File names are the user's, and may hold anything a file system allows: bytes
that are not UTF-8 (Python keeps them as lone surrogates), control characters
that would move a terminal's cursor. Every name the report keeps as text and
every line it describes goes through ``shown``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The command line's one escaping, under the name the scan's API gives it.
from modelvault.cli.escaping import printable as shown

__all__ = ["REPORT_SAMPLE", "FileChange", "ScanReport", "shown"]

# Report at most this many paths per list (the counts are always whole).
REPORT_SAMPLE = 100


@dataclass(frozen=True)
class FileChange:
    """One file the scan found changed (what ``-v`` prints): ``kind`` is ``new``,
    ``changed``, ``moved`` (from ``path`` to ``to``), ``missing`` or ``skipped``;
    ``why`` says more (why a file or folder was skipped)."""

    kind: str
    path: str
    to: str | None = None
    why: str | None = None

    def describe(self) -> str:
        text = f"{self.kind}: {shown(self.path)}"
        if self.to is not None:
            text += f" -> {shown(self.to)}"
        if self.why:
            text += f" ({self.why})"
        return text


@dataclass
class ScanReport:
    """What a scan found. Lists hold at most ``REPORT_SAMPLE`` entries, as text
    fit to show (``shown``); counts are whole.

    ``missing`` counts catalogued files that are gone once moves are settled:
    a model whose content the scan found unchanged at another path (a
    ``duplicate`` row) moves there (``moved``); one whose size matches a file
    that waits to be hashed may have moved there (``maybe_moved``), which
    hashing settles (``settle_after_hashing``).
    """

    roots: list[str] = field(default_factory=list)
    dry_run: bool = False  # nothing was written: the counts say what a scan would do
    files_seen: int = 0
    unchanged: int = 0
    staged_new: int = 0  # files the catalog has never seen
    staged_changed: int = 0  # catalogued files whose size or mtime changed
    requeued: int = 0  # staging rows in a final status whose file changed
    already_staged: int = 0  # rows waiting for a worker already
    moved: int = 0  # models that moved to another copy of their content
    moved_paths: list[str] = field(default_factory=list)  # "old -> new"
    maybe_moved: int = 0  # gone, and a file of the same size waits to be hashed
    missing: int = 0  # catalogued files that are gone (not deleted)
    missing_paths: list[str] = field(default_factory=list)
    partial_downloads: int = 0
    files_skipped: int = 0  # model files that cannot be catalogued (FIFOs, empty, ...)
    skipped_files: list[str] = field(default_factory=list)  # "path: why"
    loops: list[str] = field(default_factory=list)  # symlinked folders leading back up
    skipped: list[str] = field(default_factory=list)  # folders not scanned, and why
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed
    seconds: float = 0.0
    # Gone models not settled by the scan itself: (sha256, path, maybe moved).
    unsettled: list[tuple[str, str, bool]] = field(default_factory=list, repr=False)

    @property
    def staged(self) -> int:
        return self.staged_new + self.staged_changed + self.requeued

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["unsettled"]
        data["staged"] = self.staged
        data["seconds"] = round(self.seconds, 3)
        return data

    def note(self, items: list[str], text: str) -> None:
        if len(items) < REPORT_SAMPLE:
            items.append(shown(text))
