from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelvault.config import Settings, default_data_dir, parse_size, sqlite_url
from modelvault.errors import ConfigError


def test_defaults_put_the_catalog_in_the_user_data_folder(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert settings.db_url == sqlite_url(default_data_dir() / "modelvault.sqlite3")
    assert str(tmp_path / "xdg-data" / "modelvault") in settings.db_url
    assert settings.workers == min(4, os.cpu_count() or 1)
    assert settings.conflict_policy == "merge"


def test_environment_overrides_every_setting(tmp_path: Path) -> None:
    env = {
        "MODELVAULT_DB_PATH": str(tmp_path / "c.sqlite3"),
        "MODELVAULT_HASH_CHUNK_BYTES": "4M",
        "MODELVAULT_WORKERS": "3",
        "MODELVAULT_LEASE_SECONDS": "7.5",
        "MODELVAULT_MAX_ATTEMPTS": "9",
        "MODELVAULT_RETRY_BACKOFF_SECONDS": "0",
        "MODELVAULT_CONFLICT_POLICY": "KEEP",
        "MODELVAULT_IMPORT_BATCH_SIZE": "10",
        "MODELVAULT_WORKER_BATCH_SIZE": "2",
        "MODELVAULT_SQLITE_BUSY_TIMEOUT_SECONDS": "1",
    }
    settings = Settings.from_env(env)
    assert settings.db_url == sqlite_url(tmp_path / "c.sqlite3")
    assert settings.hash_chunk_bytes == 4 * 1024 * 1024
    assert (settings.workers, settings.lease_seconds, settings.max_attempts) == (3, 7.5, 9)
    assert settings.retry_backoff_seconds == 0
    assert settings.conflict_policy == "keep"
    assert (settings.import_batch_size, settings.worker_batch_size) == (10, 2)
    assert settings.sqlite_busy_timeout_seconds == 1


def test_url_variable_and_explicit_overrides() -> None:
    settings = Settings.from_env({"MODELVAULT_DB_URL": "postgresql://u@h/db"}, workers=2)
    assert settings.db_url == "postgresql://u@h/db"
    assert settings.workers == 2


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MODELVAULT_WORKERS", "many", "MODELVAULT_WORKERS='many' is not valid: expected a whole"),
        ("MODELVAULT_WORKERS", "0", "MODELVAULT_WORKERS: workers 0 is not valid"),
        ("MODELVAULT_LEASE_SECONDS", "soon", "MODELVAULT_LEASE_SECONDS='soon' is not valid"),
        ("MODELVAULT_HASH_CHUNK_BYTES", "12Q", "MODELVAULT_HASH_CHUNK_BYTES='12Q' is not valid"),
        ("MODELVAULT_HASH_CHUNK_BYTES", "1", "MODELVAULT_HASH_CHUNK_BYTES: hash_chunk_bytes 1"),
        ("MODELVAULT_CONFLICT_POLICY", "smash", "expected one of merge, keep, replace"),
        ("MODELVAULT_MAX_ATTEMPTS", "-1", "MODELVAULT_MAX_ATTEMPTS: max_attempts -1"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")) as info:
        Settings.from_env({variable: value})
    assert variable in str(info.value)


def test_url_and_path_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="both set"):
        Settings.from_env({"MODELVAULT_DB_URL": "sqlite://", "MODELVAULT_DB_PATH": "x"})


def test_settings_built_in_code_are_validated() -> None:
    with pytest.raises(ConfigError, match="conflict_policy 'nope'"):
        Settings(conflict_policy="nope")
    with pytest.raises(ConfigError, match="db_url is empty"):
        Settings(db_url=" ")


@pytest.mark.parametrize(
    ("text", "size"), [("4096", 4096), ("64k", 65536), ("8MiB", 8 << 20), ("1G", 1 << 30)]
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size
