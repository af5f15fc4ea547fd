"""Fresh catalogs for the benchmarks: a SQLite file, or a PostgreSQL database of their own.

A benchmark run must never meet the rows of an earlier one, so each run gets a
new catalog; PostgreSQL databases are made on the server of ``server_url`` (its
user must be allowed to create databases) and dropped by ``drop_all``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.engine import make_url


def plain_postgres(url: str) -> str:
    """The URL as psycopg itself takes it (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class ScratchCatalogs:
    """Fresh catalog URLs of one backend ("sqlite" or "postgresql")."""

    def __init__(self, backend: str, folder: Path, server_url: str | None = None) -> None:
        if backend == "postgresql" and server_url is None:
            raise ValueError("a PostgreSQL server URL is needed for PostgreSQL catalogs")
        self.backend = backend
        self.folder = folder
        self.server_url = server_url
        self.made: list[str] = []

    def fresh(self, label: str) -> str:
        """The URL of a new, empty catalog (schema not created yet)."""
        if self.backend == "sqlite":
            path = self.folder / f"{label}.sqlite3"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            return f"sqlite:///{path}"
        import psycopg

        assert self.server_url is not None
        name = f"mv_bench_{label}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(plain_postgres(self.server_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        url = make_url(self.server_url).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop the PostgreSQL databases made so far (SQLite files go with their folder)."""
        if not self.made:
            return
        import psycopg

        assert self.server_url is not None
        with psycopg.connect(plain_postgres(self.server_url), autocommit=True) as conn:
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()
