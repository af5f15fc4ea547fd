"""A PostgreSQL server that stops answering, seen through a relay the test freezes
(it stops passing bytes without closing anything, as a stopped server process or
a NAS gone to sleep looks to its clients): nothing waits on it for good, the
workers say so in one sentence, and the first Ctrl-C ends a command at once.

Small timeouts come from the settings, so the bounds are seconds; every wait
here polls with a deadline, and a subprocess that outlives a generous timeout
fails the test instead of hanging it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from support import legacy_with_files, run_modelvault, wait_for
from support.tcp_relay import Relay

from modelvault import DatabaseManager, Settings
from modelvault.cli.interrupt import first_ctrl_c_ends
from modelvault.config import shown_url
from modelvault.db import deadline
from modelvault.errors import CatalogNotAnsweringError
from modelvault.migration.manager import MigrationManager, MigrationState
from modelvault.scan.writer import WRITE_BATCH

FILES = 3000  # tiny files, one per claim: the worker is busy for seconds, a call at a time
QUICK = {
    "MODELVAULT_DB_STATEMENT_TIMEOUT": "1",  # so the client gives up after 1 + 5 s
    "MODELVAULT_DB_CONNECT_TIMEOUT": "2",
    "MODELVAULT_WORKER_BATCH_SIZE": "1",
    "MODELVAULT_WORKERS": "2",
}
ENDS_WITHIN = 120  # a generous ceiling: a wait without a bound would go on for good


@pytest.fixture
def catalog(postgres_database: str) -> str:
    """An empty catalog on the test server, reached directly."""
    from support.postgres import reset_postgres

    reset_postgres(postgres_database)
    db = DatabaseManager(postgres_database)
    db.init_db()
    db.dispose()
    return postgres_database


@pytest.fixture
def relay(catalog: str) -> Iterator[Relay]:
    url = make_url(catalog)
    if not url.host or url.host.startswith("/"):
        pytest.skip("the test server is reached through a Unix socket: nothing to relay")
    with Relay((url.host, url.port or 5432)) as running:
        yield running


def through(relay: Relay, catalog: str) -> str:
    """The catalog's URL through the relay."""
    return make_url(catalog).set(host="127.0.0.1", port=relay.port).render_as_string(False)


def staged_files(folder: Path, url: str, count: int = FILES) -> None:
    """``count`` tiny model files, staged for hashing by a scan."""
    loras = folder / "loras"
    loras.mkdir(parents=True)
    for i in range(count):
        (loras / f"m{i:05d}.safetensors").write_bytes(i.to_bytes(4, "little") * 16)
    done = run_modelvault("scan", str(folder), "--db", url, cwd=folder, timeout=300)
    assert done.returncode == 0, done.stderr


def count(url: str, query: str) -> int:
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def start_worker(url: str, cwd: Path, *command: str, **extra: str) -> subprocess.Popen[str]:
    """``modelvault worker`` (or ``command``) on the catalog at ``url``, with ``QUICK``
    settings and the ``extra`` environment."""
    env = {**os.environ, **QUICK, **extra, "MODELVAULT_DB_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "modelvault", *(command or ("worker",)), "-q"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def freeze_while_hashing(relay: Relay, catalog: str) -> None:
    """Freeze the relay once the worker has catalogued some files, with many left."""
    wait_for(lambda: count(catalog, "SELECT count(*) FROM models") >= 20, "the worker to start")
    relay.freeze()
    assert count(catalog, "SELECT count(*) FROM models") < FILES, "it finished before the freeze"


@pytest.mark.slow
def test_a_worker_on_a_frozen_server_exits_1_saying_so(
    relay: Relay, catalog: str, tmp_path: Path
) -> None:
    url = through(relay, catalog)
    staged_files(tmp_path / "models", catalog)
    worker = start_worker(url, tmp_path)
    freeze_while_hashing(relay, catalog)
    _, err = worker.communicate(timeout=ENDS_WITHIN)

    assert_one_sentence(worker, err, url)

    # What it could not hand back is taken over by the next run on this host at once
    # (its owner is provably dead): well before a lease of 120 s would run out.
    relay.thaw()
    again = start_worker(url, tmp_path, MODELVAULT_LEASE_SECONDS="120")
    _, err = again.communicate(timeout=90)
    assert again.returncode == 0, err
    assert count(catalog, "SELECT count(*) FROM models") == FILES


def assert_one_sentence(proc: subprocess.Popen[str], err: str, url: str) -> None:
    """Exit 1, and one line saying which server did not answer and what to do."""
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        f"modelvault: error: the catalog server at {shown_url(make_url(url))} did not answer "
        "within 6 s (it may be stopped, asleep or cut off by the network): "
    )
    assert lines[0].endswith(
        "check that the server runs and can be reached, then run the workers again."
    )
    password = make_url(url).password
    assert not password or password not in err


@pytest.mark.slow
def test_migrate_on_a_server_that_freezes_while_it_hashes(
    relay: Relay, catalog: str, tmp_path: Path
) -> None:
    url = through(relay, catalog)
    legacy, _ = legacy_with_files(tmp_path, FILES, size=64)
    migrate = start_worker(url, tmp_path, "migrate", str(legacy))
    freeze_while_hashing(relay, catalog)
    _, err = migrate.communicate(timeout=ENDS_WITHIN)
    assert_one_sentence(migrate, err, url)


@pytest.mark.slow
@pytest.mark.posix_only("sends SIGINT to a child process (Windows has CTRL_C_EVENT)")
def test_the_first_ctrl_c_ends_a_worker_on_a_frozen_server(
    relay: Relay, catalog: str, tmp_path: Path
) -> None:
    url = through(relay, catalog)
    staged_files(tmp_path / "models", catalog)
    # A deadline far beyond this test's patience: only Ctrl-C can end the worker in time.
    worker = start_worker(url, tmp_path, MODELVAULT_DB_STATEMENT_TIMEOUT="600")
    freeze_while_hashing(relay, catalog)
    wait_for(relay.held_back, "the worker to wait for the frozen server")
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=30)

    assert worker.returncode == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"modelvault: interrupted: the catalog at {shown_url(make_url(url))} did not take the "
        "files being hashed back within 1.4 s: any left claimed are taken over by the next run "
        "on this host at once"
    )


@pytest.mark.slow
def test_a_look_only_command_ends_with_one_sentence(
    relay: Relay, catalog: str, tmp_path: Path
) -> None:
    url = through(relay, catalog)
    relay.freeze()
    done = run_modelvault(
        "status", "--db", url, cwd=tmp_path, env={**os.environ, **QUICK}, timeout=ENDS_WITHIN
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"modelvault: error: the catalog server at {shown_url(make_url(url))} did not answer "
        "within 2 s (it may be stopped, asleep or cut off by the network): check that the "
        "server runs and can be reached, then run the command again."
    ]


def test_the_library_raises_and_recovers_once_the_server_answers(
    relay: Relay, catalog: str
) -> None:
    url = through(relay, catalog)
    db = DatabaseManager(url, settings=Settings(db_url=url, db_statement_timeout=1))
    try:
        assert db.staging_counts()["pending"] == 0
        relay.freeze()
        for _ in range(2):
            # The ping of the pooled connection misses its deadline (1 + 5 s); once the
            # server is silent, a new connection is given a short try, not a whole timeout.
            with pytest.raises(CatalogNotAnsweringError) as info:
                db.staging_counts()
            assert info.value.seconds == deadline.RETRY_SECONDS
            assert info.value.catalog == db.display_url
        relay.thaw()
        assert db.staging_counts()["pending"] == 0
        with db.engine.connect() as conn:  # and its waits have the whole deadline again
            server = conn.connection.dbapi_connection.modelvault_server  # type: ignore[union-attr]
        assert not server.silent
    finally:
        relay.thaw()
        db.dispose()


@pytest.mark.posix_only("signals the main thread (pthread_kill)")
def test_ctrl_c_cuts_short_a_wait_for_a_frozen_server(relay: Relay, catalog: str) -> None:
    url = through(relay, catalog)
    db = DatabaseManager(url, settings=Settings(db_url=url, db_statement_timeout=600))
    main = threading.main_thread().ident
    assert main is not None
    assert threading.get_ident() == main
    try:
        db.staging_counts()  # connected: what follows waits for an answer, not a connection
        relay.freeze()

        def interrupt_once_waiting() -> None:
            wait_for(lambda: bool(deadline.awaited_servers()), "the main thread to wait")
            signal.pthread_kill(main, signal.SIGINT)

        threading.Thread(target=interrupt_once_waiting, daemon=True).start()
        with pytest.raises(KeyboardInterrupt), first_ctrl_c_ends():
            db.staging_counts()  # without the handler: 605 s, then CatalogNotAnsweringError
    finally:
        relay.thaw()
        db.dispose()


@pytest.mark.slow
def test_a_paused_scan_outlives_the_idle_in_transaction_limit(catalog: str, tmp_path: Path) -> None:
    """A scan reads the catalog in one transaction while it walks the folders; a
    pause holds it there, for as long as the user likes."""
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    for i in range(WRITE_BATCH + 10):  # a batch written, a pause, then more to walk
        (loras / f"m{i:04d}.safetensors").write_bytes(i.to_bytes(4, "little"))
    db = DatabaseManager(
        catalog, settings=Settings(db_url=catalog, db_idle_in_transaction_timeout=1)
    )
    manager = MigrationManager(db)
    try:
        manager.pause_processing()
        assert manager.start_scan([tmp_path / "models"], workers=1)
        wait_for(lambda: db.staging_counts()["pending"] >= WRITE_BATCH, "a batch to be staged")
        wait_for(lambda: _idle_in_transaction_for(catalog, 2.0), "the scan to idle beyond 1 s")
        manager.resume_processing()
        assert manager.wait(ENDS_WITHIN)
        status = manager.status()
        assert status.state is MigrationState.DONE, status.error
        assert db.count_models() == WRITE_BATCH + 10
    finally:
        manager.close(30)
        db.dispose()


def _idle_in_transaction_for(url: str, seconds: float) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
        f"state = 'idle in transaction' AND state_change < now() - interval '{seconds} s'"
    )
    return count(url, query) > 0


@pytest.mark.slow
@pytest.mark.posix_only("sends SIGINT to a child process (Windows has CTRL_C_EVENT)")
@pytest.mark.skipif(
    not Path("/proc/self/syscall").is_file(), reason="needs Linux's /proc to see where it waits"
)
def test_the_first_ctrl_c_ends_a_command_stuck_on_a_locked_sqlite_catalog(tmp_path: Path) -> None:
    """SQLite waits for another program's lock inside one C call, where Python
    cannot raise KeyboardInterrupt: the command ends anyway, saying so."""
    file = tmp_path / "catalog.sqlite3"
    assert run_modelvault("init", "--db", str(file), cwd=tmp_path).returncode == 0
    other = sqlite3.connect(file, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another program holds the catalog
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelvault", "retry", "--db", str(file)],
            cwd=tmp_path,
            env={**os.environ, "MODELVAULT_SQLITE_BUSY_TIMEOUT_SECONDS": "600"},
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: _busy_waiting(proc.pid), "the command to wait for the lock in SQLite")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)  # the busy timeout is 600 s
    finally:
        other.close()
    assert proc.returncode == 130
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "modelvault: interrupted: a step did not end within 1.75 s (a database lock, a file "
            "that hangs?), so it stopped without finishing that step"
        )
    )
    assert err.strip().endswith("run the same command again to continue")


# nanosleep and clock_nanosleep on x86-64 and on arm64: SQLite's busy handler sleeps
# between its tries, in C, where Python cannot raise KeyboardInterrupt.
_SLEEP_SYSCALLS = {"35", "230", "101", "115"}


def _busy_waiting(pid: int) -> bool:
    """Whether the process sleeps in SQLite's busy handler: the catalog is open and
    its main thread is in a sleep system call (the command sleeps nowhere else)."""
    proc = Path(f"/proc/{pid}")
    try:
        opened = any(
            os.readlink(proc / "fd" / fd).endswith("catalog.sqlite3")
            for fd in os.listdir(proc / "fd")
        )
        syscall = (proc / "syscall").read_text().split()[:1]
        wchan = (proc / "wchan").read_text()
    except OSError:
        return False
    return opened and ("nanosleep" in wchan or bool(set(syscall) & _SLEEP_SYSCALLS))
