"""The database's timeouts as settings: parsed and refused like the others, given
to PostgreSQL as connection parameters, and a value the URL gives kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from support import run_modelvault

from modelvault.config import Settings
from modelvault.db.engine import create_catalog_engine
from modelvault.db.postgres import connect_parameters, server_options
from modelvault.errors import ConfigError


def test_defaults_bound_every_wait() -> None:
    settings = Settings.from_env({})
    assert settings.db_connect_timeout == 10
    assert settings.db_statement_timeout == 30
    assert settings.db_idle_in_transaction_timeout == 60
    keepalives = (
        settings.db_keepalives_idle,
        settings.db_keepalives_interval,
        settings.db_keepalives_count,
    )
    assert keepalives == (30, 10, 3)
    assert settings.db_tcp_user_timeout == 60


def test_the_environment_sets_each_timeout() -> None:
    settings = Settings.from_env(
        {
            "MODELVAULT_DB_CONNECT_TIMEOUT": "3",
            "MODELVAULT_DB_STATEMENT_TIMEOUT": "2.5",
            "MODELVAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT": "90",
            "MODELVAULT_DB_KEEPALIVES_IDLE": "5",
            "MODELVAULT_DB_KEEPALIVES_INTERVAL": "2",
            "MODELVAULT_DB_KEEPALIVES_COUNT": "4",
            "MODELVAULT_DB_TCP_USER_TIMEOUT": "13",
        }
    )
    assert settings.db_connect_timeout == 3
    assert settings.db_statement_timeout == 2.5
    assert settings.db_idle_in_transaction_timeout == 90
    assert (settings.db_keepalives_idle, settings.db_keepalives_interval) == (5, 2)
    assert settings.db_keepalives_count == 4
    assert settings.db_tcp_user_timeout == 13


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "MODELVAULT_DB_CONNECT_TIMEOUT",
            "1",
            "MODELVAULT_DB_CONNECT_TIMEOUT: db_connect_timeout 1 is not valid: "
            "use a whole number from 2 to 3600.",
        ),
        (
            "MODELVAULT_DB_CONNECT_TIMEOUT",
            "2.5",
            "MODELVAULT_DB_CONNECT_TIMEOUT='2.5' is not valid: expected a whole number.",
        ),
        (
            "MODELVAULT_DB_STATEMENT_TIMEOUT",
            "0",
            "MODELVAULT_DB_STATEMENT_TIMEOUT: db_statement_timeout 0.0 is not valid: "
            "use a number from 1 to 86400.",
        ),
        (
            "MODELVAULT_DB_STATEMENT_TIMEOUT",
            "soon",
            "MODELVAULT_DB_STATEMENT_TIMEOUT='soon' is not valid: expected a number of seconds.",
        ),
        (
            "MODELVAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT",
            "nan",
            "MODELVAULT_DB_IDLE_IN_TRANSACTION_TIMEOUT: db_idle_in_transaction_timeout nan",
        ),
        (
            "MODELVAULT_DB_KEEPALIVES_COUNT",
            "0",
            "MODELVAULT_DB_KEEPALIVES_COUNT: db_keepalives_count 0 is not valid",
        ),
        ("MODELVAULT_DB_TCP_USER_TIMEOUT", "-5", "db_tcp_user_timeout -5.0 is not valid"),
    ],
)
def test_a_bad_timeout_is_refused_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: value})
    assert expected in str(info.value)


def test_settings_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"db_keepalives_idle 1\.5 is not valid: use a whole"):
        Settings(db_keepalives_idle=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="db_connect_timeout True is not valid"):
        Settings(db_connect_timeout=True)


def test_the_command_refuses_a_bad_timeout_in_one_sentence(tmp_path: Path) -> None:
    env = {"MODELVAULT_DB_STATEMENT_TIMEOUT": "forever"}
    done = run_modelvault("status", cwd=tmp_path, env={**os.environ, **env}, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "modelvault: error: MODELVAULT_DB_STATEMENT_TIMEOUT='forever' is not valid: "
        "expected a number of seconds."
    ]


# -- connection parameters --------------------------------------------------------


SMALL = Settings(
    db_connect_timeout=4,
    db_statement_timeout=1.5,
    db_idle_in_transaction_timeout=20,
    db_keepalives_idle=7,
    db_keepalives_interval=3,
    db_keepalives_count=2,
    db_tcp_user_timeout=9,
)


def test_every_bound_becomes_a_connection_parameter() -> None:
    params = connect_parameters({}, SMALL, environ={})
    assert params == {
        "connect_timeout": 4,
        "keepalives": 1,
        "keepalives_idle": 7,
        "keepalives_interval": 3,
        "keepalives_count": 2,
        "tcp_user_timeout": 9000,  # libpq counts it in milliseconds
        "options": "-c statement_timeout=1500 -c idle_in_transaction_session_timeout=20000",
    }


def test_what_the_url_gives_is_kept() -> None:
    query = {
        "connect_timeout": "25",
        "Keepalives": "0",
        "tcp_user_timeout": "0",
        "options": "-c search_path=mine -c statement_timeout=7s",
    }
    params = connect_parameters(query, SMALL, environ={"PGOPTIONS": "-c work_mem=1MB"})
    assert "connect_timeout" not in params
    assert "keepalives" not in params
    assert "tcp_user_timeout" not in params
    assert params["keepalives_idle"] == 7
    assert params["options"] == (
        "-c search_path=mine -c statement_timeout=7s -c idle_in_transaction_session_timeout=20000"
    )


@pytest.mark.parametrize(
    "given",
    [
        "-c statement_timeout=0",
        "-cstatement_timeout=0",
        "--statement-timeout=0",
        "--statement_timeout=0",
        "-c STATEMENT_TIMEOUT = 0",
    ],
)
def test_each_way_of_naming_a_setting_in_options_counts(given: str) -> None:
    options = server_options(given, SMALL)
    assert options == f"{given} -c idle_in_transaction_session_timeout=20000"


def test_pgoptions_is_kept_when_the_url_has_no_options() -> None:
    params = connect_parameters(
        {}, SMALL, environ={"PGOPTIONS": "-c idle_in_transaction_session_timeout=0"}
    )
    assert params["options"] == (
        "-c idle_in_transaction_session_timeout=0 -c statement_timeout=1500"
    )


def test_a_read_only_catalog_stays_read_only_whatever_the_options_say() -> None:
    options = server_options("-c default_transaction_read_only=off", SMALL, read_only=True)
    assert options.endswith("-c default_transaction_read_only=on")  # the last one wins


def test_the_server_runs_with_the_bounds(postgres_database: str) -> None:
    from support.postgres import reset_postgres

    reset_postgres(postgres_database)
    engine = create_catalog_engine(postgres_database, settings=SMALL)
    try:
        with engine.connect() as conn:
            shown = {
                name: conn.exec_driver_sql(f"SHOW {name}").scalar()
                for name in ("statement_timeout", "idle_in_transaction_session_timeout")
            }
            used = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert shown == {"statement_timeout": "1500ms", "idle_in_transaction_session_timeout": "20s"}
    assert (used["connect_timeout"], used["keepalives_idle"], used["tcp_user_timeout"]) == (
        "4",
        "7",
        "9000",
    )


def test_the_server_runs_with_what_the_url_says(postgres_database: str) -> None:
    url = make_url(postgres_database).update_query_dict(
        {"connect_timeout": "17", "options": "-c statement_timeout=7s"}
    )
    engine = create_catalog_engine(url, settings=SMALL, read_only=True)
    try:
        with engine.connect() as conn:
            statement = conn.exec_driver_sql("SHOW statement_timeout").scalar()
            read_only = conn.exec_driver_sql("SHOW default_transaction_read_only").scalar()
            used = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert (statement, read_only, used["connect_timeout"]) == ("7s", "on", "17")
