"""SIGTERM and SIGHUP stop the real command as Ctrl-C does: the rows being hashed
go back to the queue, the private copy of a WAL-mode legacy file is removed,
one line says so, and the exit code names the signal (143, 129)."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from support import run_modelvault, wait_for

from modelvault.legacy.private_copies import PREFIX
from modelvault.migration.sample import LegacyModel, write_legacy_catalog

FILES = 24
FILE_SIZE = 256 << 20  # sparse: cheap to make, some seconds to hash all of them

pytestmark = [
    pytest.mark.slow,
    pytest.mark.posix_only("sends SIGTERM, SIGHUP and SIGSTOP to a child process"),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of big sparse model files and a WAL-mode legacy catalog of them (no
    hashes: each must be hashed). Returns (folder, legacy file)."""
    root = tmp_path_factory.mktemp("signals")
    folder = root / "models" / "loras"
    folder.mkdir(parents=True)
    rows = []
    for i in range(1, FILES + 1):
        path = folder / f"model_{i:03d}.safetensors"
        with path.open("wb") as f:
            f.write(i.to_bytes(8, "little"))  # each of its own content
            f.truncate(FILE_SIZE)
        rows.append(LegacyModel(i, str(path), "loras", size_bytes=FILE_SIZE))
    legacy = write_legacy_catalog(root / "hikaze_mm.sqlite3", rows=rows, wal=True)
    return folder, legacy


def count(db_url: str, sql: str) -> int:
    """``sql``'s count, read as a look-only command reads (SQLite: ``mode=ro``)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return int(db.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def claimed(db_url: str) -> int:
    return count(db_url, "SELECT count(*) FROM pending_import WHERE status = 'claimed'")


def private_copies(tmp: Path) -> list[Path]:
    return sorted(tmp.glob(PREFIX + "*"))


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """The temporary folder of the commands the test runs (TMPDIR)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def start(args: list[str], cwd: Path, tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelvault", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(tmp),
    )


def child_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp)}


@pytest.fixture
def catalog(db_url: str, tmp_path: Path) -> str:
    """An empty catalog on each backend, made by the command."""
    made = run_modelvault("init", "--db", db_url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return db_url


def _command(name: str, models: tuple[Path, Path], db_url: str, tmp_path: Path) -> list[str]:
    folder, legacy = models
    common = ["--db", db_url, "--workers", "1", "--json"]
    if name == "migrate":
        return ["migrate", str(legacy), *common]
    if name == "scan":
        return ["scan", str(folder), "--hash", *common]
    queued = run_modelvault("import", str(legacy), "--db", db_url, "-q", cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr
    return ["worker", *common]


@pytest.mark.parametrize(
    ("command", "name", "code"),
    [
        ("migrate", "SIGTERM", 143),
        ("migrate", "SIGHUP", 129),
        ("worker", "SIGTERM", 143),
        ("scan", "SIGHUP", 129),
    ],
)
def test_a_signal_mid_hashing_hands_the_rows_back(
    catalog: str,
    models: tuple[Path, Path],
    tmp_path: Path,
    tmp: Path,
    command: str,
    name: str,
    code: int,
) -> None:
    child = start(_command(command, models, catalog, tmp_path), tmp_path, tmp)
    wait_for(
        lambda: child.poll() is not None or claimed(catalog) > 0,
        "a file to be claimed for hashing",
        timeout=120,
    )
    assert child.poll() is None, child.communicate()[1]
    child.send_signal(signal.Signals[name])  # by name: Windows has no SIGHUP
    out, err = child.communicate(timeout=120)

    assert child.returncode == code, err
    assert "Traceback" not in err
    assert "modelvault: interrupted: finishing the current step and releasing files" in err
    report: dict[str, Any] = json.loads(out)
    assert report["exit_code"] == code
    assert claimed(catalog) == 0  # handed back at once, not left for the lease to run out
    waiting = count(catalog, "SELECT count(*) FROM pending_import WHERE status = 'pending'")
    assert waiting >= 1, "every file was hashed before the signal came"
    assert waiting + count(catalog, "SELECT count(*) FROM models") == FILES
    assert private_copies(tmp) == []


def stop_mid_import(child: subprocess.Popen[str], tmp: Path) -> None:
    """Freeze ``child`` (SIGSTOP) while the private copy of its legacy file exists."""
    wait_for(
        lambda: child.poll() is not None or bool(private_copies(tmp)),
        "the private copy of the legacy file",
        timeout=120,
    )
    assert child.poll() is None, child.communicate()
    child.send_signal(signal.SIGSTOP)
    assert private_copies(tmp), "the import was over before it could be stopped"


def big_legacy_in_wal_mode(folder: Path, rows: int = 20_000) -> Path:
    """A WAL-mode legacy catalog of ``rows`` hashed rows (files gone): the import
    takes a while, and reads a private copy."""
    models = [
        LegacyModel(i, f"/gone/model_{i}.safetensors", "loras", hash_hex=f"{i:064x}")
        for i in range(1, rows + 1)
    ]
    folder.mkdir()
    return write_legacy_catalog(folder / "hikaze_mm.sqlite3", rows=models, wal=True)


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_mid_import_removes_the_private_copy(
    catalog: str, tmp_path: Path, tmp: Path, name: str, code: int
) -> None:
    legacy = big_legacy_in_wal_mode(tmp_path / "legacy")
    child = start(["import", str(legacy), "--db", catalog, "--json"], tmp_path, tmp)
    stop_mid_import(child, tmp)
    child.send_signal(signal.Signals[name])
    child.send_signal(signal.SIGCONT)
    out, err = child.communicate(timeout=120)

    assert child.returncode == code, err
    assert err == "modelvault: interrupted: run the same command again to continue\n"
    assert out == ""
    assert private_copies(tmp) == []


def test_a_copy_a_killed_import_left_is_removed_by_the_next_run_never_a_live_ones(
    tmp_path: Path, tmp: Path
) -> None:
    legacy = big_legacy_in_wal_mode(tmp_path / "legacy")
    db = str(tmp_path / "catalog.sqlite3")
    assert run_modelvault("init", "--db", db, cwd=tmp_path).returncode == 0
    child = start(["import", str(legacy), "--db", db, "--json"], tmp_path, tmp)
    stop_mid_import(child, tmp)
    child.kill()
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    (left,) = private_copies(tmp)
    assert (left / legacy.name).exists()  # the copy of the user's catalog, whole

    # A run still going, with a copy of its own.
    running = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from modelvault.legacy.private_copies import new_folder\n"
            "print(new_folder(sys.argv[1]), flush=True)\n"
            "sys.stdin.read()\n",
            str(tmp),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert running.stdout is not None
        live = Path(running.stdout.readline().strip())
        again = run_modelvault(
            "import", str(legacy), "--db", db, "--json", cwd=tmp_path, env=child_env(tmp)
        )
        assert again.returncode == 0, again.stderr
        assert private_copies(tmp) == [live]
    finally:
        running.communicate("", timeout=60)


# A session leader on the pseudo-terminal given as stdin, then the command.
ON_A_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "os.setsid()\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'modelvault', *sys.argv[1:]])\n"
)


class Terminal:
    """A pseudo-terminal the command runs on, read until it is closed (hung up)."""

    def __init__(self, args: list[str], cwd: Path, tmp: Path) -> None:
        import pty  # POSIX only, as the tests using it are marked

        self.master, slave = pty.openpty()
        self.child = subprocess.Popen(
            [sys.executable, "-c", ON_A_TERMINAL, *args],
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**child_env(tmp), "TERM": "xterm"},
        )
        os.close(slave)
        self.output = bytearray()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while not self._closing.is_set():
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if ready:
                    self.output += os.read(self.master, 65536)
        except OSError:  # the command closed its end
            pass
        finally:
            os.close(self.master)

    def hang_up(self) -> None:
        """Close the terminal, as closing its window does."""
        self._closing.set()
        self._reader.join(30)
        assert not self._reader.is_alive()


def test_closing_the_terminal_hands_the_rows_back(
    catalog: str, models: tuple[Path, Path], tmp_path: Path, tmp: Path
) -> None:
    text_output = _command("worker", models, catalog, tmp_path)[:-1]  # without --json
    terminal = Terminal(text_output, tmp_path, tmp)
    wait_for(
        lambda: terminal.child.poll() is not None or claimed(catalog) > 0,
        "a file to be claimed for hashing",
        timeout=120,
    )
    assert terminal.child.poll() is None, terminal.output.decode(errors="replace")
    terminal.hang_up()
    terminal.child.wait(120)

    assert terminal.child.returncode == 129, terminal.output.decode(errors="replace")
    assert claimed(catalog) == 0
    assert count(catalog, "SELECT count(*) FROM pending_import WHERE status = 'pending'") >= 1
