"""PostgreSQL connections that never wait without a bound.

The settings become libpq connection parameters (``connect_parameters``): a
connect timeout; TCP keepalives and, on Linux, a TCP user timeout, which end a
connection whose peer computer is gone; and, in the startup ``options``, the
server's ``statement_timeout`` and ``idle_in_transaction_session_timeout``,
which end a statement that runs too long and free the locks of a client that
froze inside a transaction. A value the catalog URL's query already gives (or
``PGOPTIONS`` for a server setting, when the URL has no ``options``) is kept.

None of these ends a wait on a server that is frozen while its computer still
answers for it, so each wait of a connection also has a deadline of the client's
own (``modelvault.db.deadline``): the statement timeout plus a margin, a few
seconds once the server missed one. The watched connection class below arms it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import Engine, event

from modelvault.config import Settings
from modelvault.db import deadline
from modelvault.db.deadline import INTERRUPT, RETRY_SECONDS, NoAnswer, Server

RV = TypeVar("RV")

# Server settings given in the startup options (milliseconds, as PostgreSQL reads a bare number).
STATEMENT_TIMEOUT = "statement_timeout"
IDLE_IN_TRANSACTION_TIMEOUT = "idle_in_transaction_session_timeout"
READ_ONLY = "default_transaction_read_only"


def server_for(name: str, settings: Settings) -> Server:
    """The deadline bookkeeping of one catalog's server (``name``: its URL, masked)."""
    return Server(name, settings.db_statement_timeout + deadline.ANSWER_MARGIN_SECONDS)


def connect_parameters(
    query: Mapping[str, str | tuple[str, ...]],
    settings: Settings,
    *,
    read_only: bool = False,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The libpq parameters to connect with, for a URL whose query is ``query``:
    each one the query does not give itself. ``options`` holds the URL's own
    options (or ``PGOPTIONS``), then the timeouts it does not set."""
    given = {key.lower() for key in query}
    wanted: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout,
        "keepalives": 1,
        "keepalives_idle": settings.db_keepalives_idle,
        "keepalives_interval": settings.db_keepalives_interval,
        "keepalives_count": settings.db_keepalives_count,
        "tcp_user_timeout": _milliseconds(settings.db_tcp_user_timeout),  # no effect off Linux
    }
    params = {key: value for key, value in wanted.items() if key not in given}
    own = query.get("options")
    if own is None:
        own = (os.environ if environ is None else environ).get("PGOPTIONS", "")
    elif isinstance(own, tuple):  # ?options=...&options=...: libpq takes the last
        own = own[-1] if own else ""
    params["options"] = server_options(own, settings, read_only=read_only)
    return params


def server_options(given: str, settings: Settings, *, read_only: bool = False) -> str:
    """``given`` (a libpq ``options`` string) with our server settings after it:
    the timeouts it does not name, and read-only mode (always: a later ``-c``
    wins, and a read-only catalog must stay read-only)."""
    parts = [given.strip()] if given.strip() else []
    timeouts = {
        STATEMENT_TIMEOUT: _milliseconds(settings.db_statement_timeout),
        IDLE_IN_TRANSACTION_TIMEOUT: _milliseconds(settings.db_idle_in_transaction_timeout),
    }
    parts += [f"-c {name}={value}" for name, value in timeouts.items() if not _names(given, name)]
    if read_only:
        parts.append(f"-c {READ_ONLY}=on")
    return " ".join(parts)


def _names(options: str, setting: str) -> bool:
    """Whether libpq ``options`` set ``setting`` (``-c name=``, ``-cname=`` or ``--name=``,
    with ``-`` for ``_`` as PostgreSQL allows)."""
    name = setting.replace("_", "[-_]")
    return re.search(rf"(?:^|\s)(?:-c\s*|--){name}\s*=", options, re.IGNORECASE) is not None


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def configure(engine: Engine, server: Server) -> None:
    """Make every psycopg connection of ``engine`` a watched one (each wait with a
    deadline), connecting within a short timeout while ``server`` is silent."""
    watched = watched_connection_class()

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        return connect(watched, server, cargs, cparams)


def connect(watched: Any, server: Server, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """``watched.connect(...)``; a connection that timed out makes the server silent."""
    import psycopg

    params = dict(cparams)
    if server.silent:  # it missed a deadline: one short try, not a whole timeout
        params["connect_timeout"] = RETRY_SECONDS
    try:
        conn = watched.connect(*cargs, **params)
    except psycopg.OperationalError as exc:
        if "timeout expired" not in str(exc):  # psycopg's "connection timeout expired"
            raise
        server.silent = True
        raise no_answer(_connect_seconds(params), connecting=True) from exc
    conn.modelvault_server = server
    server.silent = False
    return conn


def _connect_seconds(params: Mapping[str, Any]) -> float:
    try:
        return max(float(params.get("connect_timeout", 0)), RETRY_SECONDS)
    except ValueError:
        return RETRY_SECONDS


_classes: dict[str, Any] = {}


def no_answer(seconds: float, *, connecting: bool = False) -> Exception:
    """The driver error of a server that did not answer within ``seconds``."""
    cls = _classes.get("error")
    if cls is None:
        import psycopg

        cls = _classes["error"] = type("NoAnswerError", (NoAnswer, psycopg.OperationalError), {})
    what = "accept the connection" if connecting else "answer"
    error: NoAnswer = cls(f"the server did not {what} within {seconds:g} s")
    error.seconds = seconds
    return error


def watched_connection_class() -> Any:
    """A ``psycopg.Connection`` whose every wait for the server (a statement, a
    commit, a fetch, a ping) has a deadline, and can be cut short by Ctrl-C."""
    cls = _classes.get("connection")
    if cls is None:
        cls = _classes["connection"] = _define_watched_connection()
    return cls


def _define_watched_connection() -> Any:
    import psycopg
    from psycopg.abc import PQGen

    class WatchedConnection(psycopg.Connection[Any]):
        modelvault_server: Server | None = None

        def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
            server = self.modelvault_server
            try:
                fileno = self.pgconn.socket
            except psycopg.Error:  # no socket: the wait fails by itself
                server = None
            if server is None:
                return super().wait(gen, *args, **kwargs)
            with deadline.Wait(server, fileno) as wait:
                try:
                    result = super().wait(gen, *args, **kwargs)
                except psycopg.Error as exc:
                    if wait.ended_by is None:
                        raise
                    raise _ended(wait) from exc
                if wait.ended_by is not None:  # cut short just as the answer came
                    raise _ended(wait)
            return result

    return WatchedConnection


def _ended(wait: deadline.Wait) -> BaseException:
    if wait.ended_by == INTERRUPT:
        return KeyboardInterrupt()
    return no_answer(wait.seconds)
