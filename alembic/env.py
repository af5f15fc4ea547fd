"""Alembic environment for the modelvault catalog.

Two callers: ``DatabaseManager.init_db()`` passes its own open connection in
``config.attributes["connection"]`` (and no ini file, so the embedding app's
logging is left alone); the ``alembic`` command line gets a URL from
``-x db=URL``, else from modelvault's settings, and builds its own engine.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from modelvault.config import Settings
from modelvault.db.engine import create_catalog_engine
from modelvault.db.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _catalog_url() -> str:
    return context.get_x_argument(as_dictionary=True).get("db") or Settings.from_env().db_url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only ALTER by copying tables
        compare_type=True,
        compare_server_default=False,
        **kwargs,  # type: ignore[arg-type]
    )


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    _configure(url=_catalog_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = create_catalog_engine(_catalog_url())
    try:
        with engine.connect() as own_connection:
            _run_on(own_connection)
            own_connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
