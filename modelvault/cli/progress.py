"""The migration's progress on stderr.

On a terminal, one live line sized to stderr's own terminal (stdout may be a
file): percentage, files, bytes, rate and ETA always, the bar in the room left
(it shrinks first), the current file's name when there is room still. When
stderr is not a terminal (or ``TERM=dumb``), a plain line every few seconds,
and at once when a pause or a wait begins or ends; with ``-q`` nothing.
Numbers are never drawn going backwards.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.live import Live
from rich.text import Text

from modelvault.cli.escaping import printable
from modelvault.cli.output import human_bytes, human_seconds

PLAIN_INTERVAL_SECONDS = 5.0
MIN_BAR, MAX_BAR = 10, 40
# Cells a file name is given at least (or all it needs): cut shorter, it tells little.
MIN_NAME = 20
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


@dataclass(frozen=True)
class Frame:
    """What one drawing of the progress line shows."""

    fraction: float | None
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    rate: float
    eta: float | None
    current: str | None = None
    note: str = ""  # e.g. "paused", "waiting 30 s to retry 2 files"
    sizes_known: bool = True  # False: some files' sizes are not known yet (the total is more)


def _short_bytes(done: float, total: float, letters: bool, more: str = "") -> str:
    """``'1.2/3.4 GiB'`` (or ``'1.2/3.4G'``): both in the unit of the total (``more``
    after it: ``'1.2/3.4+ GiB'`` when the total is at least that)."""
    scale = 0
    while total >= 1024 and scale < len(_UNITS) - 1:
        total /= 1024
        done /= 1024
        scale += 1
    digits = 0 if scale == 0 else 1
    unit = _UNITS[scale][0] if letters else " " + _UNITS[scale]
    return f"{done:.{digits}f}/{total:.{digits}f}{more}{unit}"


def _percent(fraction: float | None) -> str:
    """Rounded down: 99.6% is ``'99%'``, so ``'100%'`` is only ever said when it is all done."""
    return "--%" if fraction is None else f"{math.floor(fraction * 100 + 1e-9):d}%"


def _fields(frame: Frame, level: int) -> list[str]:
    """The numbers, from the roomiest (level 0) to the tightest (level 2) spelling."""
    pct = _percent(frame.fraction)
    files = f"{frame.files_done}/{frame.files_total} files"
    more = "" if frame.sizes_known else "+"  # the sizes of some files are not known yet
    if level == 0:
        total = human_bytes(frame.bytes_total)
        if more:
            number, unit = total.split()
            total = f"{number}{more} {unit}"
        size = f"{human_bytes(frame.bytes_done)}/{total}"
        rate = human_bytes(frame.rate) + "/s"
    else:
        size = _short_bytes(frame.bytes_done, frame.bytes_total, letters=level == 2, more=more)
        number, unit = human_bytes(frame.rate).split()
        number = f"{float(number):.0f}" if float(number) >= 10 else number
        rate = f"{number}{unit[0] if level == 2 else ' ' + unit}/s"
    eta = f"ETA {human_seconds(frame.eta)}"
    return [pct, files, size, rate, eta] + ([frame.note] if frame.note else [])


def bar_cells(width: int) -> int:
    """The bar's width on a terminal ``width`` columns wide: the same in every frame."""
    return max(MIN_BAR, min(MAX_BAR, (width - 1) // 8))


def render(frame: Frame, width: int, *, ascii_only: bool = False) -> Text:
    """The progress line for a terminal ``width`` columns wide (never wider than width - 1).

    The numbers come first, spelled tighter on narrow terminals; then the bar,
    whose width depends on the terminal's alone, so it does not jump from frame
    to frame; then the current file's name in the room left (its middle cut
    out when it is too long). What does not fit goes: the name, then the bar.
    """
    room = max(1, width - 1)  # the last column would make some terminals wrap
    name = printable(os.path.basename(frame.current or ""))
    bar = bar_cells(width) if frame.fraction is not None else 0
    texts = [("  " if level == 0 else " ").join(_fields(frame, level)) for level in (0, 1, 2)]
    text, with_bar, with_name = texts[-1], False, False
    for level, bar_wanted, name_wanted in _LAYOUTS:
        used = cell_len(texts[level]) + (bar + 1 if bar_wanted else 0)
        if (bar_wanted and not bar) or (name_wanted and not name):
            continue
        if used + (min(cell_len(name), MIN_NAME) + 2 if name_wanted else 0) <= room:
            text, with_bar, with_name = texts[level], bar_wanted, name_wanted
            break
    line = Text()
    if with_bar:
        filled = int(bar * min(1.0, max(0.0, frame.fraction or 0.0)))
        full, empty = ("#", "-") if ascii_only else ("━", "─")
        line.append(full * filled, style="green")
        line.append(empty * (bar - filled), style="bright_black")
        line.append(" ")
    line.append(text)
    if with_name:
        line.append("  ")
        line.append(shorten_name(name, room - cell_len(line.plain) - 2), style="cyan")
    line.truncate(room)
    return line


# (spelling level, bar, name), most wanted first: the roomiest numbers with the bar
# and the name, a tighter spelling before the name is given up, the bar last.
_LAYOUTS = (
    (0, True, True),
    (1, True, True),
    (0, True, False),
    (1, True, False),
    (2, True, True),
    (2, True, False),
    (0, False, False),
    (1, False, False),
    (2, False, False),
)


def shorten_name(name: str, width: int) -> str:
    """``name`` in at most ``width`` cells, what tells files apart kept: the start, and
    the end with the last word before the extension (``juggern…v9.safetensors``)."""
    if cell_len(name) <= width:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 12:
        stem, extension = name, ""
    else:
        extension = "." + extension
    last_word = re.split(r"[-_. ]", stem)[-1]
    room = width - 1 - cell_len(extension)  # less the ellipsis
    if room < 4:  # not even a start: the end
        return "…" + _cells_from_end(name, width - 1)
    tail = _cells_from_end(last_word, room - 4) + extension  # 4: the start's least
    head = _cells_from_start(name, width - 1 - cell_len(tail))
    return f"{head}…{tail}"


def _cells_from_start(text: str, cells: int) -> str:
    while cell_len(text) > cells:
        text = text[:-1]
    return text


def _cells_from_end(text: str, cells: int) -> str:
    while cell_len(text) > max(0, cells):
        text = text[1:]
    return text


def plain(frame: Frame) -> str:
    """The line written when stderr is not a terminal."""
    text = "  ".join(_fields(frame, 0))
    return f"progress: {text}" + (f"  {printable(frame.current)}" if frame.current else "")


class ProgressView:
    """Draws progress on the stderr console from any thread; ``close()`` ends the line.

    A stderr that cannot be written (a terminal that went away with SIGHUP, a
    full disk) ends the drawing, never the run.
    """

    def __init__(
        self,
        console: Console,
        *,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
        interval: float = PLAIN_INTERVAL_SECONDS,
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.clock = clock
        self.interval = interval
        self.live_mode = console.is_interactive and not quiet
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._last_plain = clock()  # the first plain line after one interval
        self._last_note = ""  # of the last plain line: a new kind of note is written at once
        self._best = (0, 0, 0.0)  # files, bytes, fraction drawn so far
        # Once closed, a late status from a subscriber thread must not start a new
        # line below the summary (each start leaves one more copy on screen).
        self._closed = False
        self.last_frame: Frame | None = None

    # -- what the CLI feeds in ------------------------------------------------

    def importing(self, done: int, total: int) -> None:
        """Stage 1 (a few seconds): a count of legacy rows is all there is to show."""
        percent = f"{done / total:.0%}  " if total else ""
        self._show(None, f"importing legacy rows: {percent}{done}/{total}", force=done == total)

    def scanning(self, files_seen: int) -> None:
        """A folder scan: how many model files it has looked at (no total is known)."""
        self._show(None, f"scanning model folders: {files_seen:,} files looked at")

    def hashing(self, status: Any, *, final: bool = False) -> None:
        """A ``MigrationStatus`` from a subscriber thread; ``final``: the last one,
        always shown (also as a plain line)."""
        if status.state.value in ("idle", "importing", "failed"):
            return
        if not (status.files_total or final):
            return  # the queue is not counted yet: nothing worth drawing
        with self._lock:
            files = max(self._best[0], status.files_done)
            done = max(self._best[1], status.bytes_done)
            # The manager's fraction: below 1 while a file remains, by files while
            # some sizes are unknown. Drawn never going back.
            fraction = status.fraction
            if fraction is not None:
                fraction = max(self._best[2], fraction)
            self._best = (files, done, fraction or 0.0)
        paused = status.state.value == "paused"
        frame = Frame(
            fraction,
            files,
            max(status.files_total, files),
            done,
            max(status.bytes_total, done),
            status.rate_bytes_per_second,
            status.eta_seconds,
            current=status.current_file,
            note="paused" if paused else (status.waiting or ""),
            sizes_known=not status.files_unsized,
        )
        self._show(frame, force=final)

    def close(self, *, erase: bool = False) -> None:
        """End the live line (kept on screen, or wiped with ``erase``: an interrupted
        run's summary says the rest); nothing is drawn after this."""
        with self._lock:
            self._closed = True
            live, self._live = self._live, None
            if live is not None:
                live.transient = erase
                self._unless_unwritable(live.stop)

    # -- drawing --------------------------------------------------------------

    def _show(self, frame: Frame | None, label: str = "", *, force: bool = False) -> None:
        """Draw ``frame`` (or, without one, the ``label``)."""
        if self.quiet:
            return
        with self._lock:
            if self._closed:
                return
            if frame is not None:
                self.last_frame = frame
            if self.live_mode:
                self._unless_unwritable(lambda: self._draw_live(frame, label))
                return
            now = self.clock()
            note = _note_kind(frame.note) if frame is not None else self._last_note
            if not force and now - self._last_plain < self.interval and note == self._last_note:
                return
            self._last_plain, self._last_note = now, note
            line = f"progress: {label}" if frame is None else plain(frame)
            self._unless_unwritable(lambda: self.console.print(line))

    def _unless_unwritable(self, draw: Callable[[], object]) -> None:
        """``draw()``; if stderr cannot be written, draw nothing more."""
        try:
            draw()
        except OSError:
            self.quiet = True
            self._live = None

    def _draw_live(self, frame: Frame | None, label: str) -> None:
        width = _stderr_width(self.console)
        self.console.width = width
        ascii_only = not self.console.encoding.lower().startswith("utf")
        if frame is None:
            line = Text(label)
            line.truncate(width - 1)
        else:
            line = render(frame, width, ascii_only=ascii_only)
        if self._live is None:
            self._live = Live(
                line,
                console=self.console,
                auto_refresh=False,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        self._live.update(line, refresh=True)


def _note_kind(note: str) -> str:
    """``'waiting'`` of ``'waiting 30 s to retry 2 files'``: a log says when a wait or
    a pause begins and ends, not every second of it."""
    return note.split(" ", 1)[0]


def _stderr_width(console: Console) -> int:
    """Columns of the terminal stderr is on (not stdout's, which may be a file)."""
    try:
        return os.get_terminal_size(console.file.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80
