"""Shared fixtures: real catalogs on SQLite files and, when configured, PostgreSQL.

PostgreSQL tests run when MODELVAULT_TEST_POSTGRES_URL names a server database
the tests may create databases from (``.ci/run`` sets it); each test session
works in a database of its own, and each test in an empty schema.

Every test gets a home and data folders of its own (``HOME``, ``USERPROFILE``,
``APPDATA``, ``LOCALAPPDATA``, ``XDG_DATA_HOME``), so none can read or write the
developer's real catalog on any system. Tests marked ``posix_only("why")`` skip
with that reason where the system is not POSIX (Windows);
``MODELVAULT_TEST_NOT_POSIX=1`` makes them skip here too, to see what Windows runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from support import libpq_files
from support.postgres import reset_postgres

from modelvault import DatabaseManager
from modelvault.config import sqlite_url

POSTGRES_ENV = "MODELVAULT_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]
POSIX = os.name == "posix" and not os.environ.get("MODELVAULT_TEST_NOT_POSIX")
# libpq's password and service files, found in the home folder unless named: the
# developer's own, so the test server still answers once each test has its own home.
_PG_FILES = libpq_files(os.environ)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if POSIX:
        return
    for item in items:
        marker = item.get_closest_marker("posix_only")
        if marker is not None:
            why = marker.args[0] if marker.args else "needs a POSIX system"
            item.add_marker(pytest.mark.skip(reason=f"POSIX only: {why}"))


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's MODELVAULT_* settings or touch their home or data
    folders (the default catalog lives in one of them)."""
    for name in list(os.environ):
        if name.startswith("MODELVAULT_") and not name.startswith("MODELVAULT_TEST_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    folders = {
        "HOME": home,
        "USERPROFILE": home,
        "APPDATA": home / "AppData" / "Roaming",
        "LOCALAPPDATA": home / "AppData" / "Local",
        "XDG_DATA_HOME": tmp_path / "xdg-data",
    }
    for name, folder in folders.items():  # not made: a test sees what is made in them
        monkeypatch.setenv(name, str(folder))
    for name, path in _PG_FILES.items():
        monkeypatch.setenv(name, path)


def postgres_server_url() -> str:
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        pytest.skip(f"PostgreSQL not configured: set {POSTGRES_ENV} to run these tests")
    return url


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of this test session's own on the configured server, dropped at the end."""
    server = make_url(postgres_server_url()).set(drivername="postgresql+psycopg")
    name = f"modelvault_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty catalog on each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "catalog.sqlite3")
    url: str = request.getfixturevalue("postgres_database")
    reset_postgres(url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[DatabaseManager]:
    """An initialised catalog on each backend."""
    manager = DatabaseManager(db_url)
    manager.init_db()
    yield manager
    manager.dispose()
