"""Building blocks for tests: legacy catalogs with real files behind them, and
what a test watches (the statements a catalog runs)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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

# The newest schema revision: what init_db() returns and a catalog is migrated to.
HEAD_REVISION = "v5"


def notes_of(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A model's or staging row's meta without what its file's header said
    (``identify``, ``autov3``: modelvault.identify.catalog)."""
    return {k: v for k, v in meta.items() if k not in ("identify", "autov3")}


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


def rewrite_hiding(path: str | os.PathLike[str], data: bytes) -> None:
    """Rewrite the file at ``path`` in place with ``data`` (its size) and put its mtime
    back, as ``rsync --inplace -t`` or a restore does; only its change time tells.

    A kernel that keeps coarse timestamps may give a write in the same tick as the
    last change the same change time: the rewrite is done again until it moved.
    """
    before = os.stat(path)
    assert len(data) == before.st_size, "a hiding rewrite keeps the size"

    def rewritten() -> bool:
        with open(path, "r+b") as f:
            f.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        now = os.stat(path)
        assert (now.st_size, now.st_mtime_ns, now.st_ino) == (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        )
        return now.st_ctime_ns != before.st_ctime_ns

    wait_for(rewritten, "a rewrite to move the file's change time", 10)


def in_time(call: Callable[[], object], what: str) -> None:
    """Run ``call`` in a daemon thread; fail (never hang) if it does not return in time."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    wait_for(lambda: not thread.is_alive(), what, 30)


class Blocking:
    """A progress subscriber that blocks in its first call until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.called = threading.Event()
        self.seen: list[Any] = []
        self.threads: set[str] = set()

    def __call__(self, status: Any) -> None:
        self.threads.add(threading.current_thread().name)
        self.seen.append(status)
        self.called.set()
        self.release.wait()


def hashing_settled(manager: Any) -> bool:
    """Whether a ``MigrationManager``'s byte count held still for a moment (paused workers)."""
    before = manager.status(refresh=False).bytes_done
    manager.wait(0.2)
    return bool(manager.status(refresh=False).bytes_done == before)


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
    sized: bool = True,
) -> tuple[Path, dict[str, str]]:
    """A layout-2 legacy catalog of ``count`` model files under ``root``.

    The first ``hashed`` rows carry their real hash, the last ``missing`` files
    are deleted; every row has a coloured tag and a note, and its size unless
    not ``sized`` (``size_bytes`` NULL). Returns the catalog path and {path: sha256}.
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
                size_bytes=size if sized else None,
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
    """Act as the unprivileged user ``nobody`` inside the block (root only: the
    effective ids change, so the process gets root back afterwards)."""
    uid, gid = nobody_ids()
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A new folder anyone may write in (tmp_path's parents are the test user's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="modelvault-shared-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.chmod(0o777)
        shutil.rmtree(folder)


def nobody_ids() -> tuple[int, int]:
    """The user and group ids of the user ``nobody`` (POSIX only)."""
    import pwd  # imported where it is used, so the suite collects on Windows

    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def running_as_root() -> bool:
    """Root on POSIX (Windows has no effective user id: never)."""
    return getattr(os, "geteuid", lambda: -1)() == 0


@contextmanager
def unreadable(folder: Path) -> Iterator[None]:
    """Inside the block, this process cannot look into ``folder``: it is locked with
    chmod, or, for root (who may look anywhere), made root's own while the process
    acts as the user ``nobody`` (see ``as_nobody``: the catalog must be where nobody
    may read and write, e.g. a ``shared_folder``)."""
    if running_as_root():
        folder.chmod(0o700)
        with as_nobody():
            yield
        return
    folder.chmod(0)
    try:
        yield
    finally:
        folder.chmod(0o755)


# The developer's home folders, as they were before conftest.py gave each test its own:
# for the one tool that needs its user's settings (pip, to know where to install from).
DEVELOPER_HOME = {
    name: os.environ[name]
    for name in ("HOME", "USERPROFILE", "APPDATA", "LOCALAPPDATA")
    if name in os.environ
}


def libpq_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The password and service files libpq would read for this user, where they exist
    and are not named already (``PGPASSFILE``, ``PGSERVICEFILE``)."""
    if os.name == "nt":
        folder = Path(environ.get("APPDATA", "")) / "postgresql"
        defaults = {
            "PGPASSFILE": folder / "pgpass.conf",
            "PGSERVICEFILE": folder / ".pg_service.conf",
        }
    else:
        home = Path(environ.get("HOME") or Path.home())
        defaults = {"PGPASSFILE": home / ".pgpass", "PGSERVICEFILE": home / ".pg_service.conf"}
    return {
        name: str(path) for name, path in defaults.items() if name not in environ and path.is_file()
    }


def run_in_terminal(
    args: list[str], cwd: Path, columns: int, *, answer: str | None = None, **env: str
) -> tuple[int, str]:
    """Run ``modelvault`` with stdin, stdout and stderr on a pseudo-terminal of
    ``columns`` (POSIX only); ``answer`` is typed once it asks ``[y/N]``."""
    import fcntl  # POSIX only, as the tests that call this are marked
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    environ.update(env)
    child = subprocess.Popen(
        [sys.executable, "-m", "modelvault", *args],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environ,
        close_fds=True,
    )
    os.close(slave)
    output = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 300)
        assert ready, "the command printed nothing for 300 s"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        output += chunk
        if answer is not None and b"[y/N]" in output:
            os.write(master, answer.encode() + b"\n")
            answer = None
    os.close(master)
    return child.wait(timeout=60), output.decode()
