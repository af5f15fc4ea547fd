"""``modelvault serve``: the real command in a subprocess, as a user runs it."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import run_modelvault

from modelvault.cli.serve import is_loopback, page_address

pytest.importorskip("aiohttp", reason="the web extra (aiohttp) is not installed")

PREFIX = "modelvault: serving the catalog at "


@contextlib.contextmanager
def serving(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``modelvault serve`` on any free port; yields the process and the address it printed."""
    catalog = tmp_path / "catalog.sqlite3"
    command = [sys.executable, "-m", "modelvault", "--db", str(catalog), "serve", "--port", "0"]
    with subprocess.Popen(
        [*command, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # blocks until it prints, or ends
            assert line.startswith(PREFIX), line + (process.stderr.read() if process.stderr else "")
            yield process, line[len(PREFIX) :].strip()
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            process.wait(60)


def fetch(address: str, *, host: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(address, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.posix_only("ends the server with SIGINT, as Ctrl-C does")
def test_serve_answers_on_loopback_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with serving(tmp_path) as (process, address):
        assert address.startswith("http://127.0.0.1:")
        assert "token" not in address
        status, models = fetch(address + "api/models")
        assert status == 200
        assert models == {"total": 0, "offset": 0, "limit": 100, "models": []}
        status, _ = fetch(address + "api/models", host="rebound.example")
        assert status == 403
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        assert process.stderr is not None
        assert "stopped serving" in process.stderr.read()


@pytest.mark.posix_only("ends the server with SIGINT, as Ctrl-C does")
def test_another_host_needs_the_token_printed_once(tmp_path: Path) -> None:
    with serving(tmp_path, "--host", "0.0.0.0") as (_, address):
        assert "?token=" in address
        bare = address.partition("?")[0].replace("0.0.0.0", "127.0.0.1")
        status, _ = fetch(bare + "api/tags")
        assert status == 401
        token = address.partition("?token=")[2]
        status, tags = fetch(f"{bare}api/tags?token={token}")
        assert (status, tags) == (200, [])
        status, _ = fetch(f"{bare}api/tags?token={token}", host="rebound.example")
        assert status == 403


def test_a_port_that_is_no_number_is_bad_input(tmp_path: Path) -> None:
    result = run_modelvault(
        "--db", str(tmp_path / "c.sqlite3"), "serve", "--port", "80000", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "is not a port number from 0 to 65535" in result.stderr


def test_loopback_names_and_addresses() -> None:
    assert is_loopback("localhost")
    assert is_loopback("127.0.0.2")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.org")
    assert page_address("::1", 80, None) == "http://[::1]:80/"
    assert page_address("10.0.0.1", 80, "t") == "http://10.0.0.1:80/?token=t"
