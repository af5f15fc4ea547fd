"""Settings: built-in defaults, overridden by ``MODELVAULT_*`` environment variables.

``Settings.from_env()`` is the one place that reads the environment; everything
else receives a ``Settings`` object, so embedding apps can build one in code
(``Settings(db_url=...)``) and tests never need to touch ``os.environ``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from modelvault.errors import ConfigError

ENV_PREFIX = "MODELVAULT_"
DEFAULT_DB_FILENAME = "modelvault.sqlite3"
CONFLICT_POLICIES = ("merge", "keep", "replace")
# The digests the worker computes as it reads a file: the SHA-256 always (the
# catalog's key); Civitai's AutoV3 of safetensors files on request (it costs about
# one more SHA-256 of the file).
HASHES = ("sha256", "autov3")

T = TypeVar("T")


def default_data_dir() -> Path:
    """The per-user data folder of this platform (where the default catalog lives)."""
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "modelvault"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "modelvault"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home / ".local" / "share") / "modelvault"


def default_db_url() -> str:
    """The catalog used when nothing else is configured: a file in the data folder."""
    return sqlite_url(default_data_dir() / DEFAULT_DB_FILENAME)


# "user:password@" right after the scheme (or at the start of a URL written
# without one); greedy up to the last "@", since a password may hold one.
_CREDENTIALS = re.compile(r"(^(?!.*://)|://)([^:/@\s]*):.*@")
# The connection parameters that carry a secret (libpq's, which psycopg takes in
# a URL's query, in a key=value connection string, or in a dbname that is one).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
# The same "user:password@" percent-encoded, in a URL given as a query value.
_QUOTED_CREDENTIALS = re.compile(r"(?i)(%3A%2F%2F)([^%/@&\s]*)%3A.*?%40")
_SECRET_SETTING = re.compile(r"(?i)\b((?:ssl)?password)(\s*=\s*|%3D)('(?:[^'\\]|\\.)*'|[^\s&#]*)")


def mask_password(text: str) -> str:
    """``text`` with every password in it replaced by ``***``: a URL's
    ``user:password@``, and ``password=...`` (or ``sslpassword``) in a query or a
    key=value connection string."""
    text = _CREDENTIALS.sub(lambda m: f"{m[1]}{m[2]}:***@", text)
    text = _QUOTED_CREDENTIALS.sub(lambda m: f"{m[1]}{m[2]}%3A***%40", text)
    return _SECRET_SETTING.sub(lambda m: f"{m[1]}{m[2]}***", text)


def shown_url(url: URL) -> str:
    """``url`` fit for messages, logs and ``info``: no password anywhere in it
    (its own, a ``?password=`` parameter, or one inside another parameter)."""
    query = {
        key: tuple(_masked(key, v) for v in value)
        if isinstance(value, tuple)
        else _masked(key, value)
        for key, value in url.query.items()
    }
    database = mask_password(url.database) if url.database else url.database
    rendered = url.set(database=database, query=query).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", "***")  # the query's "***", as SQLAlchemy quotes it


def _masked(key: str, value: str) -> str:
    return "***" if key.lower() in SECRET_PARAMETERS else mask_password(value)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of a SQLite file (absolute, so a later chdir cannot move it)."""
    file = Path(path).expanduser()
    try:
        resolved = str(file.resolve())
    except RuntimeError:  # Python before 3.13 on a symbolic link loop
        raise ConfigError(
            f"{file} is a symbolic link loop (it leads back to itself): "
            "give the path of the catalog file itself."
        ) from None
    except OSError as exc:  # a name too long for the file system, say
        raise ConfigError(
            f"{file} cannot be used as a catalog path ({exc.strerror or exc}): give another path."
        ) from exc
    # SQLAlchemy reads a "?" as the start of the query and unquotes "%XX": those
    # two are quoted, so the path stays whole; the rest reads as it is written.
    return "sqlite:///" + resolved.replace("%", "%25").replace("?", "%3F")


@dataclass(frozen=True)
class Settings:
    """Everything modelvault can be told; see the README's settings table."""

    db_url: str = field(default_factory=default_db_url)
    # 2 MiB: measured best for hashing (see modelvault/hashing.py and bench/hash_bench.py).
    hash_chunk_bytes: int = 2 * 1024 * 1024
    workers: int = field(default_factory=default_workers)
    lease_seconds: float = 120.0
    max_attempts: int = 5
    retry_backoff_seconds: float = 30.0
    conflict_policy: str = "merge"
    # Legacy rows per import transaction: each commit rewrites the index pages its
    # rows touch, so fewer, larger batches write far less (bench/import_bench.py).
    import_batch_size: int = 20_000
    # Rows per claim; a claim also stops at 256 MiB of files, so this only matters
    # for small files, where fewer, larger transactions are faster.
    worker_batch_size: int = 32
    sqlite_busy_timeout_seconds: float = 30.0
    # PostgreSQL (see modelvault/db/postgres.py): no wait on the server without a
    # bound. Seconds; a value the catalog URL's query gives wins over these.
    db_connect_timeout: int = 10
    db_statement_timeout: float = 30.0  # the client waits this + ANSWER_MARGIN for any answer
    db_idle_in_transaction_timeout: float = 60.0
    db_keepalives_idle: int = 30  # TCP keepalives: a dead peer of an idle connection is
    db_keepalives_interval: int = 10  # noticed after idle + interval x count seconds
    db_keepalives_count: int = 3
    db_tcp_user_timeout: float = 60.0  # Linux: unacknowledged data for this long ends it
    # The preview image store; None: images/ beside a SQLite catalog file (a
    # PostgreSQL or in-memory catalog then has none). See DatabaseManager.images_dir.
    images_dir: Path | None = None
    # Folders `modelvault scan` walks when given none (MODELVAULT_MODEL_ROOTS,
    # separated by os.pathsep: ":" on Linux and macOS, ";" on Windows).
    model_roots: tuple[str, ...] = ()
    # MODELVAULT_HASHES: "sha256" or "sha256,autov3" (see HASHES).
    hashes: tuple[str, ...] = ("sha256",)

    def __post_init__(self) -> None:
        _check_range("hash_chunk_bytes", self.hash_chunk_bytes, 4096, 1 << 30)
        _check_range("workers", self.workers, 1, 256)
        _check_range("lease_seconds", self.lease_seconds, 1, 86_400)
        _check_range("max_attempts", self.max_attempts, 1, 1000)
        _check_range("retry_backoff_seconds", self.retry_backoff_seconds, 0, 86_400)
        _check_range("import_batch_size", self.import_batch_size, 1, 100_000)
        _check_range("worker_batch_size", self.worker_batch_size, 1, 10_000)
        _check_range("sqlite_busy_timeout_seconds", self.sqlite_busy_timeout_seconds, 0, 3600)
        _check_whole("db_connect_timeout", self.db_connect_timeout, 2, 3600)
        _check_range("db_statement_timeout", self.db_statement_timeout, 1, 86_400)
        idle = self.db_idle_in_transaction_timeout
        _check_range("db_idle_in_transaction_timeout", idle, 1, 86_400)
        _check_whole("db_keepalives_idle", self.db_keepalives_idle, 1, 86_400)
        _check_whole("db_keepalives_interval", self.db_keepalives_interval, 1, 3600)
        _check_whole("db_keepalives_count", self.db_keepalives_count, 1, 100)
        _check_range("db_tcp_user_timeout", self.db_tcp_user_timeout, 1, 86_400)
        check_conflict_policy(self.conflict_policy, "conflict_policy")
        _check_roots(self.model_roots)
        object.__setattr__(self, "hashes", _checked_hashes(self.hashes))
        if not self.db_url.strip():
            raise ConfigError("db_url is empty: give a SQLAlchemy URL or use a file path.")
        if self.images_dir is not None:
            object.__setattr__(self, "images_dir", _image_folder(self.images_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``MODELVAULT_*`` variables, then explicit ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        url = env.get(ENV_PREFIX + "DB_URL", "").strip()
        path = env.get(ENV_PREFIX + "DB_PATH", "").strip()
        if url and path:
            raise ConfigError(
                "MODELVAULT_DB_URL and MODELVAULT_DB_PATH are both set: keep only one of them."
            )
        if url:
            parse_url(url, source=ENV_PREFIX + "DB_URL=")
            values["db_url"] = url
        elif path:
            values["db_url"] = sqlite_url(path)
        for f in fields(cls):
            if f.name == "db_url":
                continue
            var = ENV_PREFIX + f.name.upper()
            raw = env.get(var)
            if raw is not None and raw.strip():
                values[f.name] = _parse(var, raw.strip(), _PARSERS[f.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(_name_variable(str(exc), values, env)) from None


def parse_url(url: str, *, source: str = "") -> URL:
    """``url`` parsed; a malformed one is a ``ConfigError`` that never shows its password.

    ``source`` names where the URL came from (e.g. ``"MODELVAULT_DB_URL="``).
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"{source}{mask_password(url)!r} is not a database URL: use e.g. "
            "sqlite:///path/catalog.sqlite3 or postgresql://user@host:5432/db."
        ) from None
    if parsed.get_backend_name() == "sqlite" and (
        parsed.host or parsed.username or parsed.password is not None or parsed.port
    ):
        raise ConfigError(
            f"{source}{shown_url(parsed)!r} is not a SQLite URL: a SQLite catalog is a file "
            "on this computer, with no user, password or host: write "
            "sqlite:///relative/path.sqlite3 or sqlite:////absolute/path.sqlite3."
        )
    return parsed


def _name_variable(message: str, values: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """Point an out-of-range message at the environment variable that set the value."""
    name = message.split(" ", 1)[0]
    var = ENV_PREFIX + name.upper()
    if name in values and var in env:
        return f"{var}: {message}"
    return message


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{name} {value!r} is not valid: use a number from {low:g} to {high:g}.")


def _check_whole(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"{name} {value!r} is not valid: use a whole number from {low} to {high}."
        )


def _image_folder(value: object) -> Path:
    """An absolute folder path (it is created on the first image stored)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigError(f"images_dir {value!r} is not valid: give the path of a folder.")
    folder = Path(value).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"images_dir {str(folder)!r} is not valid: it is a file, not a folder.")
    return folder


def _check_roots(roots: object) -> None:
    if not isinstance(roots, tuple) or not all(isinstance(r, str) and r.strip() for r in roots):
        raise ConfigError(
            f"model_roots {roots!r} is not valid: give a tuple of folder paths, none empty."
        )


def parse_roots(text: str) -> tuple[str, ...]:
    """``MODELVAULT_MODEL_ROOTS``: folders separated by ``os.pathsep``; each made absolute."""
    parts = [part.strip() for part in text.split(os.pathsep)]
    if not all(parts):
        raise ValueError(f"an empty folder between two {os.pathsep!r}: remove it")
    return tuple(os.path.abspath(os.path.expanduser(part)) for part in parts)


_SIZE_SUFFIXES = {
    "": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
}


def parse_size(text: str) -> int:
    """``'4M'``, ``'512k'``, ``'1048576'`` -> bytes (binary units)."""
    number = text.rstrip("kKmMgGiIbB").strip()
    suffix = text[len(number) :].strip().lower()
    if suffix not in _SIZE_SUFFIXES or not number.isdigit():
        raise ValueError("expected a whole number of bytes, optionally with K, M or G")
    return int(number) * _SIZE_SUFFIXES[suffix]


def _parse_int(text: str) -> int:
    if not text.lstrip("+-").isdigit():
        raise ValueError("expected a whole number")
    return int(text)


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None


def check_conflict_policy(policy: str, what: str = "conflict policy") -> str:
    """``policy`` if it is one of ``CONFLICT_POLICIES``; else ``ConfigError`` naming
    ``what`` (the setting or argument it came as)."""
    if policy not in CONFLICT_POLICIES:
        raise ConfigError(
            f"{what} {policy!r} is not valid: use one of {', '.join(CONFLICT_POLICIES)}."
        )
    return policy


def _parse_policy(text: str) -> str:
    if text.lower() not in CONFLICT_POLICIES:
        raise ValueError(f"expected one of {', '.join(CONFLICT_POLICIES)}")
    return text.lower()


def parse_hashes(text: str) -> tuple[str, ...]:
    """``MODELVAULT_HASHES``: digest names separated by commas, e.g. ``sha256,autov3``."""
    return _checked_hashes(text, error=ValueError)


def _checked_hashes(
    given: str | tuple[str, ...], *, error: type[Exception] = ConfigError
) -> tuple[str, ...]:
    if isinstance(given, str):
        given = tuple(given.split(","))
    names = tuple(dict.fromkeys(name.strip().lower() for name in given if name.strip()))
    unknown = [name for name in names if name not in HASHES]
    if unknown:
        raise error(f"unknown hash {unknown[0]!r}: use sha256, or sha256,autov3")
    if "sha256" not in names:
        raise error("sha256 cannot be left out (the catalog knows files by it): use sha256,autov3")
    return names


_PARSERS: dict[str, Callable[[str], Any]] = {
    "hash_chunk_bytes": parse_size,
    "workers": _parse_int,
    "lease_seconds": _parse_float,
    "max_attempts": _parse_int,
    "retry_backoff_seconds": _parse_float,
    "conflict_policy": _parse_policy,
    "import_batch_size": _parse_int,
    "worker_batch_size": _parse_int,
    "sqlite_busy_timeout_seconds": _parse_float,
    "db_connect_timeout": _parse_int,
    "db_statement_timeout": _parse_float,
    "db_idle_in_transaction_timeout": _parse_float,
    "db_keepalives_idle": _parse_int,
    "db_keepalives_interval": _parse_int,
    "db_keepalives_count": _parse_int,
    "db_tcp_user_timeout": _parse_float,
    "images_dir": Path,
    "model_roots": parse_roots,
    "hashes": parse_hashes,
}


def _parse(var: str, raw: str, parser: Callable[[str], T]) -> T:
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(f"{var}={raw!r} is not valid: {exc}.") from None
