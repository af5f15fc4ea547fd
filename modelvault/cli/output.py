"""Text for people: units, plurals, tables and tag swatches, on consoles that
honour ``NO_COLOR`` and ``TERM=dumb`` (rich decides whether colour is possible).

User data (file names, tags, notes, paths, errors that quote them) reaches the
terminal only through ``printable`` (``modelvault.cli.escaping``), so a name
cannot move the cursor, change colours or hide text; and no text output fails
on a console whose encoding lacks a character (``tolerant_streams``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from modelvault.cli.escaping import printable

Line = str | Text


def human_bytes(size: float) -> str:
    """``1536`` -> ``'1.5 KiB'`` (binary units, as file managers show sizes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float | None) -> str:
    """``75`` -> ``'1:15'``; unknown -> ``'--:--'``. Rounded up: ``0:00`` is only ever
    said of nothing left."""
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(1, 'file')`` -> ``'1 file'``, ``plural(2, 'file')`` -> ``'2 files'``."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def tolerant_streams() -> None:
    """Make stdout and stderr write what their encoding cannot hold as backslash
    escapes (``\\u4e2d``) instead of failing: a piped stdout on Windows is cp1252,
    and a model named in Chinese must not end ``modelvault models > list.txt``
    with a traceback. Characters the encoding has are written as they are."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


class OutputError(Exception):
    """stdout cannot be written (a full disk, a closed file): exit code 1."""


def make_console(*, stderr: bool) -> Console:
    """A console that prints text as it is: no markup, no guessing of highlights,
    long lines left whole (a path is never wrapped or cut)."""
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False, soft_wrap=True)


@dataclass
class Ui:
    """Where a command's output goes: stdout for results, stderr for the rest."""

    json: bool = False
    quiet: bool = False
    out: Console = field(default_factory=lambda: make_console(stderr=False))
    err: Console = field(default_factory=lambda: make_console(stderr=True))

    @property
    def colour(self) -> bool:
        """Colour on stdout: a colour terminal, ``NO_COLOR`` unset, ``TERM`` not dumb."""
        return self.out.color_system is not None and not self.out.no_color

    def emit(self, data: dict[str, Any], lines: Sequence[Line]) -> None:
        """Print ``data`` as JSON with --json, else the human lines (text lines
        through ``printable``; ``Text`` lines are built of printable parts).

        ``OutputError`` when stdout cannot be written (a closed pipe stays a
        ``BrokenPipeError``: the reader went away, which is no error)."""
        try:
            if self.json:
                sys.stdout.write(json.dumps(data, indent=2, default=str, sort_keys=True) + "\n")
                return
            for line in lines:
                self.out.print(printable(line) if isinstance(line, str) else line)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc)) from exc

    def emit_text(self, text: str) -> None:
        """Write ``text`` to stdout as it is (CSV, a list of paths): errors as ``emit``."""
        try:
            sys.stdout.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(exc.strerror or str(exc)) from exc

    def say(self, message: str) -> None:
        """Tell what is happening, on stderr (not with -q or --json)."""
        if not (self.quiet or self.json):
            self.err.print(printable(message))

    def swatch(self, name: str, color: str | None, *, colour_as_text: bool = False) -> Text:
        """A tag's name behind a dot of its colour (on a colour terminal); elsewhere,
        with ``colour_as_text``, the colour after the name (``style #ff8800``)."""
        if self.colour and color:
            return Text.assemble(("●", color), " ", printable(name))
        if colour_as_text and color:
            return Text(f"{printable(name)} {color}")
        return Text(printable(name))

    def tag_list(self, tags: Sequence[Any], *, colour_as_text: bool = False) -> Text:
        """Tags one after the other (``-`` for none); see ``swatch``."""
        if not tags:
            return Text("-")
        return Text(", ").join(
            self.swatch(t.name, t.color, colour_as_text=colour_as_text) for t in tags
        )


def table(headers: Sequence[str], rows: Sequence[Sequence[Line]], right: set[int]) -> list[Line]:
    """Lines of a table with a header; columns in ``right`` aligned right.

    The last column is never padded, so long paths there stay whole.
    """
    cells = [[Text(printable(c)) if isinstance(c, str) else c for c in row] for row in rows]
    widths = [
        max([cell_len(h), *(cell_len(row[i].plain) for row in cells)])
        for i, h in enumerate(headers)
    ]
    lines: list[Line] = []
    for row in [[Text(h, style="bold") for h in headers], *cells]:
        line = Text()
        for i, cell in enumerate(row):
            last = i == len(row) - 1
            pad = " " * (widths[i] - cell_len(cell.plain))
            if i:
                line.append("  ")
            if i in right:
                line.append(pad)
            line.append_text(cell)
            if i not in right and not last:
                line.append(pad)
        line.rstrip()
        lines.append(line)
    return lines


def flush_stdout() -> None:
    """Flush stdout; ``OutputError`` if it cannot be written (see ``Ui.emit``)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from exc


# Characters that need no quotes in any shell (POSIX sh, cmd.exe, PowerShell).
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:\\=+-]+")
# Inside PowerShell's double quotes these still act: "$" expands, "`" escapes.
_POWERSHELL_ACTIVE = re.compile(r"[$`]")


def shell_command(words: Sequence[str], *, platform: str = sys.platform) -> str:
    """``words`` as a command line to type in the user's shell.

    POSIX shells: ``shlex.quote`` (single quotes). Windows: one line that works
    in both cmd.exe and PowerShell, so backslashes stay as they are and a word
    with a space or another special character goes in double quotes; a word
    holding ``$`` or a backquote, which PowerShell would expand inside them,
    goes in single quotes for PowerShell, a form cmd.exe does not know (the
    demo's folder names hardly ever hold one).
    """
    if platform != "win32":
        import shlex

        return " ".join(shlex.quote(word) for word in words)
    return " ".join(_windows_word(word) for word in words)


def _windows_word(word: str) -> str:
    if word and _PLAIN_WORD.fullmatch(word):
        return word
    if _POWERSHELL_ACTIVE.search(word):
        return "'" + word.replace("'", "''") + "'"
    # A backslash just before the closing quote would escape it for the program
    # reading its arguments (the C runtime's rules): double the trailing ones.
    trailing = len(word) - len(word.rstrip("\\"))
    return '"' + word + "\\" * trailing + '"'
