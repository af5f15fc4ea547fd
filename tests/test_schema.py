"""The schema under Alembic: one head, a clean round trip, no drift from the ORM, and the
indexes the orders of a page of models are read from."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from support import HEAD_REVISION

from modelvault import DatabaseManager, SchemaVersionError
from modelvault.config import sqlite_url
from modelvault.db.models import Base
from modelvault.db.schema import alembic_config

REPO = Path(__file__).resolve().parent.parent
TABLES = {"models", "tags", "model_tags", "pending_import", "deleted_records"}
# Each order a page of models is listed in, and the index (v6) it is read from.
ORDER_INDEXES = {
    "name": "ix_models_name_order",
    "type": "ix_models_type_order",
    "added": "ix_models_added_order",
}
BASE_INDEX = "ix_models_base_order"  # the models of one base, in name order


def test_single_head_on_top_of_v3() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD_REVISION]
    assert [s.revision for s in script.walk_revisions()][-1] == "v3"


def test_a_v3_catalog_is_upgraded_with_its_data(db: DatabaseManager) -> None:
    config = alembic_config()
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "v3")
    assert "deleted_records" not in inspect(db.engine).get_table_names()
    db.create_tag("kept")
    assert db.init_db() == HEAD_REVISION
    assert "deleted_records" in inspect(db.engine).get_table_names()
    assert db.get_tag("kept") is not None


def test_init_db_creates_the_contract_tables(db: DatabaseManager) -> None:
    inspector = inspect(db.engine)
    assert set(inspector.get_table_names()) >= TABLES
    assert db.current_revision() == HEAD_REVISION
    assert inspector.get_pk_constraint("model_tags")["constrained_columns"] == [
        "model_sha256",
        "tag_id",
    ]
    foreign_keys = {fk["name"]: fk for fk in inspector.get_foreign_keys("model_tags")}
    to_models = foreign_keys["fk_model_tags_model_sha256_models"]
    assert to_models["options"].get("ondelete") == "CASCADE"
    assert to_models["options"].get("onupdate") == "CASCADE"
    assert "ix_model_tags_tag_id" in {ix["name"] for ix in inspector.get_indexes("model_tags")}
    unique = {uc["name"] for uc in inspector.get_unique_constraints("models")}
    assert "uq_models_path" in unique


def test_orm_matches_the_migrations(db: DatabaseManager) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_orders_of_models_have_their_indexes(db: DatabaseManager) -> None:
    # SQLite's reflection skips indexes on expressions, so alembic check cannot see them.
    listing = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'models'",
        "postgresql": "SELECT indexname FROM pg_indexes WHERE tablename = 'models'",
    }[db.engine.dialect.name]
    with db.engine.connect() as conn:
        assert {*ORDER_INDEXES.values(), BASE_INDEX} <= set(conn.scalars(text(listing)))


def query_plans(db: DatabaseManager, work: Callable[[], object]) -> list[list[str]]:
    """SQLite's plan of each query ``work`` runs on ``models``, in order."""
    queries: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM models" in statement:
            queries.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    with db.engine.connect() as conn:
        return [
            [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters)]
            for query, parameters in queries
        ]


@pytest.mark.parametrize("sort", sorted(ORDER_INDEXES))
def test_a_page_of_models_is_read_from_the_index_of_its_order(tmp_path: Path, sort: str) -> None:
    db = DatabaseManager(tmp_path / "catalog.sqlite3")
    db.init_db()
    plans = query_plans(db, lambda: db.find_models(sort=sort, limit=100, offset=50_000))
    db.dispose()
    assert plans == [[f"SCAN models USING INDEX {ORDER_INDEXES[sort]}"]]


def test_a_page_of_one_base_and_its_count_are_read_from_its_index(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "catalog.sqlite3")
    db.init_db()
    page = query_plans(db, lambda: db.find_models(base="SDXL", limit=100, offset=1_000))
    count = query_plans(db, lambda: db.count_models(base="SDXL"))
    db.dispose()
    # Found through the index, never a scan of the table: both read only that base's rows.
    assert page == [["SEARCH models USING INDEX ix_models_base_order (<expr>=?)"]]
    assert count == [["SEARCH models USING INDEX ix_models_base_order (<expr>=?)"]]


def test_upgrade_downgrade_round_trip(db: DatabaseManager) -> None:
    config = alembic_config()
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert not TABLES & set(inspect(db.engine).get_table_names())
    assert db.init_db() == HEAD_REVISION
    assert set(inspect(db.engine).get_table_names()) >= TABLES


def test_init_db_is_idempotent_and_keeps_data(db: DatabaseManager) -> None:
    db.create_tag("keep me")
    assert db.init_db() == HEAD_REVISION
    assert db.get_tag("keep me") is not None


def test_a_catalog_newer_than_the_code_is_refused(db: DatabaseManager) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'v99'"))
    with pytest.raises(SchemaVersionError, match="'v99', newer than this modelvault knows"):
        db.init_db()
    with db.engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "v99"


def test_sqlite_connections_get_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    db = DatabaseManager(tmp_path / "nested" / "catalog.sqlite3")
    db.init_db()  # WAL is set once the file is known to be a catalog, and stays
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    # Our settings live on our engine only: any other engine is left as it was.
    other = create_engine(sqlite_url(tmp_path / "other.sqlite3"))
    with other.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    other.dispose()
    db.dispose()


def test_library_logger_has_a_null_handler_and_no_level() -> None:
    logger = logging.getLogger("modelvault")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert logger.level == logging.NOTSET


def test_init_db_leaves_the_apps_logging_alone(tmp_path: Path) -> None:
    # In a fresh interpreter, as an app would: no handler may appear on the root
    # logger and no logger may be disabled by Alembic's ini-file logging setup.
    program = (
        "import logging, sys\n"
        "app = logging.getLogger('app')\n"
        "from modelvault import DatabaseManager\n"
        "DatabaseManager(sys.argv[1]).init_db()\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert not app.disabled\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "c.sqlite3")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def _alembic(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.slow
def test_alembic_command_line_from_the_repository_root(db_url: str) -> None:
    env = {**os.environ, "MODELVAULT_DB_URL": db_url}
    upgrade = _alembic("upgrade", "head", env=env)
    assert upgrade.returncode == 0, upgrade.stderr
    assert DatabaseManager(db_url).current_revision() == HEAD_REVISION
    check = _alembic("check", env=env)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr
    downgrade = _alembic("downgrade", "base", env=env)
    assert downgrade.returncode == 0, downgrade.stderr
    assert not TABLES & set(inspect(DatabaseManager(db_url).engine).get_table_names())


@pytest.mark.slow
def test_alembic_takes_the_catalog_path_variable(tmp_path: Path) -> None:
    env = {**os.environ, "MODELVAULT_DB_PATH": str(tmp_path / "by-path.sqlite3")}
    result = _alembic("upgrade", "head", env=env)
    assert result.returncode == 0, result.stderr
    assert DatabaseManager(tmp_path / "by-path.sqlite3").current_revision() == HEAD_REVISION


def test_every_error_the_library_raises_is_exported() -> None:
    """An app catches them by name from the package, without knowing where each lives."""
    import inspect as pyinspect

    import modelvault
    from modelvault import errors

    defined = {
        name
        for name, value in vars(errors).items()
        if pyinspect.isclass(value) and issubclass(value, errors.ModelVaultError)
    }
    assert defined <= set(modelvault.__all__)
