"""The demo's folder: it writes only into a folder of its own, and only files it made.

A folder is the demo's when it is new, empty, or holds the demo's marker
(``.modelvault-demo``). The marker lists, one a line, every file the demo made
there, each listed before it is written; a file already in the folder is
replaced only when the marker lists it and it is still a plain file in plain
folders (no links). Everything is checked before the first write, so a folder
that is not the demo's is left exactly as it was.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from modelvault.errors import DemoFolderError

MARKER_NAME = ".modelvault-demo"
MARKER_HEADING = (
    "modelvault demo: the files it made in this folder, one a line; "
    "it never replaces any other file."
)
# The marker of earlier versions, which listed nothing: their files are kept.
_UNLISTED_HEADING = "modelvault demo: every file in this folder was made by it."


class DemoFolder:
    """A folder the demo may write into, and the files its marker lists."""

    def __init__(self, root: Path, listed: Iterable[str] = ()) -> None:
        self.root = root
        self.listed = set(listed)

    @classmethod
    def check(cls, folder: str | os.PathLike[str], writes: Iterable[str] = ()) -> DemoFolder:
        """The demo's folder at ``folder``, or ``DemoFolderError``; nothing is written.

        ``writes``: the files (relative, with ``/``) the demo is about to write;
        each must be new, or one the marker lists.
        """
        root = Path(folder)
        demo = cls(root, _read_marker(root))
        for relative in writes:
            demo._check_target(relative)
        return demo

    def claim(self) -> None:
        """Create the folder and its marker (nothing happens if both are there)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / MARKER_NAME).is_file():
                self._write_marker()
        except OSError as exc:
            raise DemoFolderError(
                f"cannot make the demo folder {self.root}: {exc.strerror or exc}; "
                "choose another folder."
            ) from exc

    def path_to_write(self, relative: str) -> Path:
        """The path of a file the demo writes now: listed in the marker first, so
        that whatever happens next, the file is known as the demo's."""
        if relative not in self.listed:
            self.listed.add(relative)
            self._write_marker()
        return self.root / relative

    def _write_marker(self) -> None:
        lines = [MARKER_HEADING, *sorted(self.listed)]
        marker = self.root / MARKER_NAME
        partial = marker.with_name(MARKER_NAME + ".partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(marker)

    def _check_target(self, relative: str) -> None:
        """Refuse to write ``relative`` over a file of the user's, or through a link."""
        here = self.root
        parts = PurePosixPath(relative).parts
        for depth, part in enumerate(parts):
            here = here / part
            try:
                mode = os.lstat(here).st_mode
            except FileNotFoundError:
                return  # nothing there yet: the demo makes it
            except OSError as exc:
                raise self._refusal(here, f"cannot be checked ({exc.strerror or exc})") from exc
            last = depth == len(parts) - 1
            if not last and not stat.S_ISDIR(mode):
                raise self._refusal(here, "is not a folder the demo made (a link, or a file)")
            if last and not (stat.S_ISREG(mode) and relative in self.listed):
                raise self._refusal(
                    here, "is not a file the demo made (its marker does not list it)"
                )

    def _refusal(self, path: Path, what: str) -> DemoFolderError:
        return DemoFolderError(
            f"{path} {what}, so the demo does not write there: give a new or empty "
            f"folder for the demo instead of {self.root}."
        )


def _read_marker(root: Path) -> list[str]:
    """The files the marker of ``root`` lists; refuses a folder that is not the demo's."""
    marker = root / MARKER_NAME
    try:
        if not os.path.lexists(root):
            _check_creatable(root)
            return []
        if not root.is_dir():
            raise DemoFolderError(
                f"{root} is not a folder: give a new or empty folder for the demo."
            )
        if not os.path.lexists(marker):
            if any(root.iterdir()):
                raise DemoFolderError(
                    f"{root} is not empty and holds no modelvault demo: give a new or empty "
                    "folder for the demo (it never writes into a folder of yours)."
                )
            return []
        if not stat.S_ISREG(os.lstat(marker).st_mode):
            raise _foreign_marker(root)
        lines = marker.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise _foreign_marker(root) from exc
    except OSError as exc:
        raise DemoFolderError(
            f"cannot look into the demo folder {root}: {exc.strerror or exc}; "
            "choose another folder."
        ) from exc
    if not lines or lines[0] not in (MARKER_HEADING, _UNLISTED_HEADING):
        raise _foreign_marker(root)
    return [line for line in lines[1:] if line]


def _check_creatable(root: Path) -> None:
    """A new folder can be made only below a folder."""
    ancestor = root.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DemoFolderError(
            f"cannot make the demo folder {root}: {ancestor} is not a folder; "
            "choose another folder."
        )


def _foreign_marker(root: Path) -> DemoFolderError:
    return DemoFolderError(
        f"{root / MARKER_NAME} was not written by the modelvault demo: give a new or empty "
        "folder for the demo."
    )
